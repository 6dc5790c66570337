# Predefined function `python-textprocessor`: simple text statistics and case changes.
OPERATIONS = {
    "word_count": lambda text: len(text.split()),
    "char_count": len,
    "uppercase": str.upper,
    "lowercase": str.lower,
}


def handle(params):
    operation = OPERATIONS.get(params["operation"])
    if operation is None:
        raise ValueError(f"unsupported operation: {params['operation']}")
    return {"value": operation(params["text"])}
