"""Document helpers shared by the scripts that run inside Krita (kritarunner and the GUI harness)."""


def structure(doc):
    """The layer tree as (depth, name, type) rows: comparing two of them tells whether undo restored it."""
    out = []

    def visit(node, depth):
        for child in node.childNodes():
            out.append((depth, child.name(), child.type()))
            visit(child, depth + 1)

    visit(doc.rootNode(), 0)
    return out
