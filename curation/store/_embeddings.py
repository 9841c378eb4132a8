"""Stored sentence embeddings, keyed by (model, hash of the embedded text).

`curation.embeddings` computes vectors; this module only finds the known ones and saves new
ones, both as one columnar statement (Arrow), since a check asks for tens of thousands.
"""

from __future__ import annotations

import numpy as np


class EmbeddingQueries:
    """The `embeddings` table (mixed into `Store`)."""

    def stored_embeddings(self, model: str, text_hashes: list[str]) -> dict[str, np.ndarray]:
        """{text hash: float32 vector} of those `text_hashes` stored for `model`."""
        import pyarrow as pa

        if not text_hashes:
            return {}
        cur = self.cursor()
        cur.register("wanted_keys", pa.table({"text_hash": pa.array(sorted(set(text_hashes)))}))
        try:
            rows = cur.execute("SELECT e.text_hash, e.vector FROM embeddings e JOIN wanted_keys "
                               "w USING (text_hash) WHERE e.model = ?", [model]).fetchall()
        finally:
            cur.unregister("wanted_keys")
        return {k: np.asarray(v, dtype=np.float32) for k, v in rows}

    def save_embeddings(self, model: str, text_hashes: list[str], vectors: np.ndarray) -> None:
        """Store one vector per text hash for `model`, in one transaction."""
        import pyarrow as pa

        table = pa.table({"model": pa.array([model] * len(text_hashes)),
                          "text_hash": pa.array(text_hashes),
                          "vector": pa.array(list(vectors), type=pa.list_(pa.float32()))})
        with self.transaction() as tx:
            tx.register("new_vectors", table)
            tx.execute("INSERT INTO embeddings SELECT model, text_hash, vector FROM new_vectors")
            tx.unregister("new_vectors")
