"""A small module with the kinds of problems a reviewer flags (the demo's input)."""


def load(path, cache={}):
    if path in cache:
        return cache[path]
    try:
        with open(path) as handle:
            data = handle.read()
    except:
        print("could not read", path)
        return None
    cache[path] = data
    return data


def classify(value):
    if value == None:
        return "none"
    if isinstance(value, int) and value > 0 and value % 2 == 0:
        return "positive even"
    elif isinstance(value, int) and value > 0:
        return "positive odd"
    for kind in (str, bytes):
        if isinstance(value, kind):
            return kind.__name__
    return "other"


def _helper(a, b, c, d, e, f):
    return a + b + c + d + e + f
