"""The records that messages carry, as both halves of fedforget build and read them.

Helpers shared by the strategies (server), the ClientApp and the data needs: model weights as
NumPy state dicts and back, samples as ``x``/``y`` records, one record to many nodes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict

from fedforget.data.sources import ArrayDataset


def numpy_state(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays as a NumPy state dict."""
    return {key: array.numpy() for key, array in arrays.items()}


def arrays_from(state: dict[str, np.ndarray]) -> ArrayRecord:
    """A NumPy state dict as an ArrayRecord (the form messages carry)."""
    return ArrayRecord(array_dict={k: Array(np.asarray(v)) for k, v in state.items()})


def data_record(data: ArrayDataset) -> ArrayRecord:
    """Samples as an ``x``/``y`` record."""
    return ArrayRecord(array_dict={"x": Array(data.x), "y": Array(data.y)})


def data_in(record: ArrayRecord) -> ArrayDataset:
    """The samples an ``x``/``y`` record carries (a data reply, a D_f sent with a request)."""
    return ArrayDataset(x=record["x"].numpy(), y=record["y"].numpy())


def messages_to(record: RecordDict, nodes: Iterable[int], message_type: str) -> list[Message]:
    """One message carrying ``record`` to each of ``nodes``."""
    return [Message(content=record, message_type=message_type, dst_node_id=n) for n in nodes]
