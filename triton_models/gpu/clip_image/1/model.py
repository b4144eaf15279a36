"""Triton python backend on a GPU: encoded images -> embeddings (logic in
moderation.serving.gpu_images)."""

import json

import triton_python_backend_utils as pb_utils

from moderation.serving import gpu_images as gi
from moderation.serving import triton_backend as tb


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        return tb.add_embedding_output(config)

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.bundle = tb.load_for_serving(config)
        options = gi.options_from(tb.params(config), tb.instance_device(args))
        self.images = gi.GpuImages(self.bundle, options)  # captures the CUDA graphs now
        self.limits = tb.limits_from_env()

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
        return tb.responses(pb_utils, self.bundle, gi.embed_image_requests(
            self.images, batches, self.limits))
