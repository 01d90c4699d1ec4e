"""The ``hf`` source: datasets read with Hugging Face ``datasets``, in Arrow batches.

``path`` is one of:

- data files: a parquet, csv, tsv, json, jsonl or arrow file, or a glob of them (``data/*.parquet``);
- a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- a directory of data files (``datasets`` infers the format and the splits);
- a Hub dataset id (``openai/gsm8k``), read from the local Hugging Face cache, downloaded when the
  hub is reachable and ``HF_HUB_OFFLINE`` is unset.

Rows are located as ``path[split]:row N`` (1-based), and are turned into Python objects one Arrow
batch at a time, never the whole split at once.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evsys.data.jsonl import JsonlLine
from evsys.schema.errors import DataError, Location, Problem

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

DEFAULT_SPLIT = "train"
BATCH_ROWS = 8192
INSTALL_HINT = "pip install 'evsys-data[hf]' (Hugging Face datasets)"

#: file suffix -> (datasets builder, extra load_dataset keyword arguments)
BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".parquet": ("parquet", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".arrow": ("arrow", {}),
}
_SAVED_MARKERS = ("dataset_dict.json", "state.json")


def _datasets_module() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(Problem(f"source_kind 'hf' needs the 'datasets' package: {INSTALL_HINT}")) from None
    return datasets


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _looks_local(path: str) -> bool:
    """A path the user meant as a file: a suffix we read, a leading ``.``/``/``/``~``, or a backslash."""
    return path.startswith((".", "/", "~")) or "\\" in path or Path(path).suffix.lower() in BUILDERS


def looks_like_a_local_file(path: str) -> bool:
    """A path (not a glob, not a Hub id) naming one data file: it ends in a suffix the source reads."""
    return not _is_glob(path) and Path(path).suffix.lower() in BUILDERS


def _builder_for(path: str) -> tuple[str, dict[str, Any]]:
    suffix = Path(path).suffix.lower()
    if suffix not in BUILDERS:
        known = ", ".join(sorted(BUILDERS))
        raise DataError(Problem(f"cannot tell the file format from '{suffix or path}'; use one of {known}", Location(path)))
    return BUILDERS[suffix]


@contextlib.contextmanager
def _quiet_local_loading(datasets: Any) -> Iterator[None]:
    """Silence the 'Generating train split' bars for local files (downloads keep theirs)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _pick_split(loaded: Any, path: str, split: str | None) -> datasets.Dataset:
    """The requested split of a ``DatasetDict`` (a one-split dict gives that split when none is asked)."""
    if not hasattr(loaded, "keys"):
        return loaded
    names = list(loaded.keys())
    if split is None and len(names) == 1:
        return loaded[names[0]]
    wanted = split or DEFAULT_SPLIT
    if wanted not in names:
        raise DataError(Problem(f"no split '{wanted}' (splits: {', '.join(names)}); set data.split", Location(path)))
    return loaded[wanted]


def _csv_text_features(datasets: Any, path: str, separator: str) -> Any:
    """Every column of a csv as text, as written: '007' stays '007' and '2' never turns into 2.0.

    The header of the first file (sorted, for a glob) names the columns.
    """
    first = sorted(glob.glob(path))[:1] if _is_glob(path) else [path]
    if not first:
        return None
    with open(first[0], encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle, delimiter=separator), [])
    return datasets.Features({name: datasets.Value("string") for name in header}) if header else None


def _load_files(datasets: Any, path: str, split: str | None) -> datasets.Dataset:
    builder, extra = _builder_for(path)
    if builder == "csv":
        extra = {**extra, "features": _csv_text_features(datasets, path, extra.get("sep", ","))}
    name = split or DEFAULT_SPLIT
    with _quiet_local_loading(datasets):
        return datasets.load_dataset(builder, data_files={name: path}, split=name, **extra)


def _load_directory(datasets: Any, directory: Path, split: str | None, subset: str | None) -> datasets.Dataset:
    if any((directory / marker).is_file() for marker in _SAVED_MARKERS):
        return _pick_split(datasets.load_from_disk(str(directory)), str(directory), split)
    with _quiet_local_loading(datasets):
        return _pick_split(datasets.load_dataset(str(directory), subset), str(directory), split)


@contextlib.contextmanager
def _hub_offline(datasets: Any) -> Iterator[None]:
    """Hub offline mode for the calls inside (what ``HF_HUB_OFFLINE=1`` does, read by both libraries at call time)."""
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _load_hub(datasets: Any, dataset_id: str, split: str | None, subset: str | None, offline: bool) -> datasets.Dataset:
    try:
        with _hub_offline(datasets) if offline else contextlib.nullcontext():
            loaded = datasets.load_dataset(dataset_id, subset, split=split or DEFAULT_SPLIT)  # only that split is downloaded
    except ConnectionError as exc:
        env_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        if env_offline:
            why, fix = "HF_HUB_OFFLINE is set", "unset it where the hub is reachable to download it"
        elif offline:
            why, fix = "validate --deep never downloads", "evsys run downloads it when the hub is reachable"
        else:
            why, fix = "the hub cannot be reached", "connect to the hub"
        raise DataError(
            Problem(
                f"Hub dataset '{dataset_id}' is not in the local Hugging Face cache and {why} ({exc}); {fix}, or give a local path",
                Location(dataset_id),
            )
        ) from None
    return _pick_split(loaded, dataset_id, split)


def open_dataset(path: str, *, split: str | None = None, subset: str | None = None, offline: bool = False) -> datasets.Dataset:
    """The split of ``path`` as a ``datasets.Dataset`` (memory-mapped Arrow); every failure is a one-line :class:`DataError`.

    ``offline`` reads a Hub dataset from the local cache only, whatever ``HF_HUB_OFFLINE`` says.
    """
    datasets = _datasets_module()
    local = Path(path).expanduser()
    try:
        if _is_glob(path) and not glob.glob(path):
            raise DataError(Problem("no files match this pattern", Location(path)))
        if _is_glob(path) or local.is_file():
            return _load_files(datasets, str(local) if not _is_glob(path) else path, split)
        if local.is_dir():
            return _load_directory(datasets, local, split, subset)
        if _looks_local(path):
            raise DataError(Problem("file not found", Location(path)))
        return _load_hub(datasets, path, split, subset, offline)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(Problem(f"no data files found: {exc}", Location(path))) from None
    except Exception as exc:  # datasets raises many types for unreadable data; each becomes one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(Problem(f"cannot read the dataset: {type(exc).__name__}: {message}", Location(path))) from None


def split_label(path: str, split: str | None, dataset: Any) -> str:
    """``path[split]``, the name rows of a dataset are located by."""
    name = split or (str(dataset.split) if getattr(dataset, "split", None) is not None else DEFAULT_SPLIT)
    return f"{path}[{name}]"


class DatasetRows:
    """The rows of one dataset split, numbered from 1 and read one Arrow batch at a time.

    Iterating yields :class:`~evsys.data.jsonl.JsonlLine` items, as every source does; ``label`` and
    ``unit`` say how to locate a row (``path[split]:row N``).
    """

    unit = "row"

    def __init__(self, dataset: datasets.Dataset, label: str, columns: Sequence[str] | None = None) -> None:
        self.dataset = dataset
        self.label = label
        self.columns = list(columns) if columns is not None else None

    @property
    def column_names(self) -> list[str]:
        """The dataset's columns."""
        return list(self.dataset.column_names)

    def __len__(self) -> int:
        return int(self.dataset.num_rows)

    def select_columns(self, columns: Sequence[str]) -> DatasetRows:
        """The same rows restricted to ``columns``; a column the dataset lacks raises one :class:`DataError`."""
        have = self.column_names
        missing = [c for c in dict.fromkeys(columns) if c not in have]
        if missing:
            raise DataError(
                Problem(
                    f"no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(have) or 'none'})",
                    Location(self.label),
                    "data.columns",
                )
            )
        return DatasetRows(self.dataset, self.label, list(dict.fromkeys(columns)))

    def batches(self, batch_size: int = BATCH_ROWS) -> Iterator[pa.Table]:
        """The rows as Arrow tables of at most ``batch_size`` rows."""
        dataset = self.dataset.select_columns(self.columns) if self.columns is not None else self.dataset
        yield from dataset.with_format("arrow").iter(batch_size=batch_size)

    def __iter__(self) -> Iterator[JsonlLine]:
        number = 0
        for table in self.batches():
            for row in table.to_pylist():
                number += 1
                yield JsonlLine(number, row=row)


def read_hf(path: str | Path, *, split: str | None = None, subset: str | None = None, offline: bool = False) -> DatasetRows:
    """The ``hf`` source: the rows of ``path`` (see the module docstring) for the requested split;
    ``offline``: a Hub dataset only from the local cache (``evsys validate --deep``)."""
    text = str(path)
    dataset = open_dataset(text, split=split, subset=subset, offline=offline)
    return DatasetRows(dataset, split_label(text, split, dataset))
