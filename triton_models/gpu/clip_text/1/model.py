"""Triton python backend on a GPU: UTF-8 texts -> embeddings, the text tower in fp16
(logic in moderation.serving.triton_backend)."""

import json

import triton_python_backend_utils as pb_utils

from moderation.serving import triton_backend as tb


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        return tb.add_embedding_output(config)

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.bundle = tb.load_for_serving(config, image_model=False,
                                          device=tb.instance_device(args))
        tower = self.bundle.text_tower()
        if self.bundle.device != "cpu" and tb.params(config).get("precision") == "fp16":
            tower.half()

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy() for r in requests]
        return tb.responses(pb_utils, self.bundle, tb.embed_text_requests(self.bundle, batches))
