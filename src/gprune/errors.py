"""Exceptions with a meaning for callers."""


class UserError(Exception):
    """A mistake in the user's input (a missing file, a bad flag): the CLI prints it as one line."""


def image_token_mismatch(tokens: int, features: int, detail: str, *, kind: str = "image") -> ValueError:
    """The model's own error for image (or video: `kind`) features that do not fill their placeholder tokens,
    with gprune's detail.

    It opens with transformers' wording, so code that matches the unpruned model's error still matches.
    """
    opening = f"{kind.capitalize()} features and {kind} tokens do not match"
    return ValueError(f"{opening}, tokens: {tokens}, features: {features}; {detail}")
