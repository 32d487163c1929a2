"""The default training corpus: the Python documentation topics.

Every CPython ships `pydoc_data.topics.topics`, the text behind `help("if")`,
`help("SEQUENCES")` and so on: 79 documents, about 465 KB of English prose
with code examples. It needs no download, so examples and tests can always
train on real text.
"""


def default_documents():
    """Returns the Python documentation topics as a list of strings.

    The documents are in sorted topic order, so the list is the same on every
    run of one Python version.

    Example:
    >>> docs = default_documents()
    >>> len(docs) > 10 and all(isinstance(d, str) for d in docs)
    True
    """
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def default_corpus():
    """Returns the Python documentation topics as one string.

    The documents of `default_documents()` joined with a blank line ("\\n\\n").
    """
    return "\n\n".join(default_documents())
