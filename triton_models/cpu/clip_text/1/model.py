"""Triton python backend: UTF-8 texts -> embeddings (logic in moderation.serving.triton_backend)."""

import json

import triton_python_backend_utils as pb_utils

from moderation.serving import triton_backend as tb


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        return tb.add_embedding_output(config)

    def initialize(self, args):
        self.bundle = tb.load_for_serving(json.loads(args["model_config"]), image_model=False)
        self.bundle.text_tower()

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy() for r in requests]
        return tb.responses(pb_utils, self.bundle, tb.embed_text_requests(self.bundle, batches))
