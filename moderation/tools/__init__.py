"""Operator tools shipped with the service: produce uploads, score files offline."""
