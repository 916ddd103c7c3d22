"""Text generation: format ``transformers``, continuous batching, the OpenAI chat and
completion routes, and token-level metrics.

``params`` and ``text`` are pure; ``sampling`` and ``engine`` wrap transformers'
continuous batching; ``model`` loads the directory; ``api`` and ``sse`` serve HTTP;
``metrics`` exports what the autoscaler and the Inference Extension read.
"""
