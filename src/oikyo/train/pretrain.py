"""Continued pretraining recipe: next-token loss on every token of plain-text documents.

    recipe = PretrainRecipe(config, ctx)   # ctx: oikyo.train.runner.RunContext
    recipe.setup(); result = recipe.train(); recipe.cleanup()

Rows must be of kind ``text`` (``{"text": ...}``); anything else stops the run with a
:class:`~oikyo.train.TrainingError` that says which method reads it. Each document is tokenized as
it is (bos where the tokenizer adds one, eos appended: :func:`oikyo.models.chat_template.encode_text`),
and every token is trained on. ``data.packing`` is on by default for this method: documents are
concatenated into ``data.max_length`` blocks, attention stays within each document.

A document longer than ``data.max_length`` (or the model's context) is cut into consecutive pieces
of at most that length, and the run log says how many: unlike a chat example, a long document is
normal pretraining data, and no token is dropped (only the first token of each later piece is not
predicted, having no context in its block).

The rest (batches, loss, evaluation) is the SFT recipe's: :class:`oikyo.train.sft.SFTRecipe`. A
model trained this way becomes a model version that a later run starts from with
``model.name: mv-...`` (SFT after continued pretraining; see :mod:`oikyo.jobs.training`).
"""

from __future__ import annotations

import itertools

from oikyo.models.chat_template import Encoded, encode_text
from oikyo.train import TrainingError, data
from oikyo.train.sft import SFTRecipe


def encode_pretrain_rows(rows, tokenizer, *, limit: data.TokenLimit, split: str = "train", log=None) -> list[Encoded]:
    """Encode text rows, every token a label; documents longer than the limit are cut into pieces."""
    examples, long_documents, empty = [], 0, 0
    for index, row in enumerate(rows):
        text = row.get("text")
        if text is None or row.get("messages") is not None:
            what = ("a preference pair" if row.get("chosen") is not None
                    else "a judged answer (unpaired preference)" if row.get("desirable") is not None
                    else "a conversation")
            raise TrainingError(
                f"{split} row {index} is {what}, not plain text; method pretrain trains on text datasets only "
                "(kind text, e.g. a .txt corpus). Use method.name=sft for conversations, dpo or orpo for "
                "preference pairs, kto for judged answers"
            )
        encoded = encode_text(tokenizer, text)
        if len(encoded) < 2:
            empty += 1  # an empty document (eos alone): nothing to predict
            continue
        size = limit.tokens
        if len(encoded) > size:
            long_documents += 1
        for start in range(0, len(encoded), size):
            piece = encoded.input_ids[start : start + size]
            if len(piece) >= 2:  # a lone trailing token has nothing to be predicted from
                examples.append(Encoded(input_ids=piece, labels=list(piece)))
    if long_documents and log:
        log(f"{split}: {long_documents} document(s) longer than {limit.describe()} were cut into pieces of at "
            "most that length (no token dropped)")
    if empty and log:
        log(f"{split}: skipped {empty} empty document(s)")
    if not examples:
        raise TrainingError(f"the {split} data is empty: no text to train on")
    return examples


class PretrainRecipe(SFTRecipe):
    """setup() → train() → cleanup() for method pretrain (SFT's loop on encoded documents)."""

    def setup(self) -> None:
        from oikyo.train.runner import Session

        config = self.config
        self.session = session = Session(config, self.ctx)
        self.pad_id = session.tokenizer.pad_token_id
        limit = data.TokenLimit(config.data.max_length, session.context_length)
        self.examples = encode_pretrain_rows(self.ctx.train_rows(), session.tokenizer, limit=limit, log=session.log)
        self.n_task, self.replay_lineage = len(self.examples), None  # SFT's loop reads them; pretrain mixes no replay
        self.lengths = [len(e) for e in self.examples]
        self.targets = [len(e) - 1 for e in self.examples]  # every token but the first is predicted
        self.eval_examples = []
        if self.ctx.eval_rows is not None and config.data.eval_split is not None:
            rows = list(itertools.islice(self.ctx.eval_rows(), config.data.max_eval_rows))
            if rows:
                self.eval_examples = encode_pretrain_rows(rows, session.tokenizer, limit=limit, split="validation")
        session.log(
            f"{len(self.examples)} training documents or pieces ({sum(self.lengths)} tokens), "
            f"{len(self.eval_examples)} validation pieces"
        )
        session.build(self)
        if config.data.packing:
            data.check_packing_support(session.model)
