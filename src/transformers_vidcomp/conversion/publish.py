r"""
Uploading a verified checkpoint folder to the Hugging Face Hub with huggingface_hub.

Every failure is turned into a `PublishError` that says what went wrong and that the local folder is untouched, so
the upload can simply be retried (or done later with `hf upload`).
"""

import os
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, constants, get_token
from huggingface_hub.errors import HFValidationError, HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id


try:  # the HTTP client huggingface_hub is built on: httpx2 from huggingface_hub 2, httpx before
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError


class PublishError(RuntimeError):
    """The upload failed; the local folder is intact."""


class HubTokenError(PublishError):
    """No Hugging Face token was found."""


class HubOfflineError(PublishError):
    """The Hub could not be reached: offline mode, or no network."""


class HubPermissionError(PublishError):
    """The token may not write to the repository: it belongs to someone else, or the token is read-only."""


def retry_hint(folder: Path, repo_id: str, private: bool, revision: str | None, create_pr: bool) -> str:
    command = f"hf upload {repo_id} {folder} ."
    command += " --private" * private + (f" --revision {revision}" if revision else "") + " --create-pr" * create_pr
    return f"Nothing was uploaded; the checkpoint at {folder} is intact. Retry later with `{command}`."


def check_repo_id(repo_id: str) -> None:
    """A malformed repository id is a typo: worth catching before a long conversion, not after it."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"{repo_id!r} is not a Hub repository id ({error}). Use `namespace/name`.") from error


def check_push_ready(repo_id: str, token: str | None = None, hint: str = "") -> str:
    r"""
    Everything about a push that can be known without the network: a valid repository id, offline mode off, and a
    token.

    Args:
        hint: appended to every error message.

    Returns:
        The token to push with.
    """
    check_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE:
        raise HubOfflineError(
            f"Cannot push to {repo_id}: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE=1); this machine does "
            f"not reach the Hub. Unset HF_HUB_OFFLINE on a machine that does, or leave out --push-to-hub. {hint}".rstrip()
        )
    token = token or get_token()
    if token is None:
        raise HubTokenError(
            f"Cannot push to {repo_id}: no Hugging Face token. Set HF_TOKEN or run `hf auth login`. {hint}".rstrip()
        )
    return token


def push_checkpoint(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> CommitInfo:
    r"""
    Creates `repo_id` if needed (`create_repo(exist_ok=True)`), and the branch `revision` if given, then uploads
    `folder` with `upload_folder`.

    Args:
        folder: a written, verified checkpoint folder.
        repo_id: `namespace/name` on the Hub.
        private: create the repository as private (an existing repository keeps its visibility).
        revision: the branch to upload to; created from `main` if missing (unless opening a pull request to it).
        create_pr: open a pull request instead of committing to the branch.
        token: a Hub token; by default `HF_TOKEN` or the one saved by `hf auth login`.
    """
    folder = Path(folder)
    intact = retry_hint(folder, repo_id, private, revision, create_pr)
    token = check_push_ready(repo_id, token, hint=intact)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Upload {folder.name} with transformers-vidcomp",
        )
    except (OfflineModeIsEnabled, TransportError, ConnectionError) as error:
        raise HubOfflineError(
            f"Cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({error}). This machine may be offline. {intact}"
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise HubTokenError(
                f"The Hub rejected the token (HTTP 401): it is invalid or expired. Run `hf auth login` again. {intact}"
            ) from error
        if status == 403:
            raise HubPermissionError(
                f"The Hub refused to let this token write to {repo_id} (HTTP 403): the repository or its namespace "
                "belongs to someone else, or the token is read-only. Use a namespace you own, a token with write "
                f"access, or --create-pr to propose the upload to the owner. {intact}"
            ) from error
        raise PublishError(f"Uploading to {repo_id} failed: {error}. {intact}") from error
