"""Triton python backend: preprocessed pixels -> embeddings (the bare image tower)."""

import json

import triton_python_backend_utils as pb_utils

from moderation.serving import triton_backend as tb


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        return tb.add_pixels_input(tb.add_embedding_output(config))

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.bundle = tb.load_for_serving(config)
        self.bundle.image_tower()

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, "PIXELS").as_numpy() for r in requests]
        return tb.responses(pb_utils, self.bundle, tb.embed_pixel_requests(self.bundle, batches))
