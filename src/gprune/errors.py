"""Exceptions with a meaning for callers."""


class UserError(Exception):
    """A mistake in the user's input (a missing file, a bad flag): the CLI prints it as one line."""


def image_token_mismatch(tokens: int, features: int, detail: str) -> ValueError:
    """The model's own error for image features that do not fill the image tokens, with gprune's detail.

    It opens with transformers' wording, so code that matches the unpruned model's error still matches.
    """
    return ValueError(f"Image features and image tokens do not match, tokens: {tokens}, features: {features}; {detail}")
