r"""
Uploading a verified checkpoint folder to the Hugging Face Hub with huggingface_hub.

Every failure is turned into a `PublishError` that says what went wrong and that the local folder is untouched, so
the upload can simply be retried (or done later with `hf upload`).
"""

import os
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled


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


def _intact(folder: Path, repo_id: str) -> str:
    return f"Nothing was uploaded; the checkpoint at {folder} is intact. Retry later with `hf upload {repo_id} {folder}`."


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
        revision: the branch to upload to; created from `main` if missing.
        create_pr: open a pull request instead of committing to the branch.
        token: a Hub token; by default `HF_TOKEN` or the one saved by `hf auth login`.
    """
    folder = Path(folder)
    if constants.HF_HUB_OFFLINE:
        raise HubOfflineError(
            f"Cannot push to {repo_id}: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE=1). {_intact(folder, repo_id)}"
        )
    token = token or get_token()
    if token is None:
        raise HubTokenError(
            f"Cannot push to {repo_id}: no Hugging Face token. Set HF_TOKEN or run `hf auth login`. "
            f"{_intact(folder, repo_id)}"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
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
            f"Cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({error}). This machine may be offline. "
            f"{_intact(folder, repo_id)}"
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubPermissionError(
                f"The Hub refused to let this token write to {repo_id} (HTTP {status}): the repository or its "
                "namespace belongs to someone else, or the token is read-only. Use a namespace you own, or a token "
                f"with write access. {_intact(folder, repo_id)}"
            ) from error
        raise PublishError(f"Uploading to {repo_id} failed: {error}. {_intact(folder, repo_id)}") from error
