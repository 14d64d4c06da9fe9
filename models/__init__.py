"""The model runtime on torch: GGUF and Hugging Face loaders, the Llama-family network, tokenizer and chat
templates, generation parameters, quantization, and the continuously batching engine (`models.engine`). It
imports torch, tokenizers and jinja2, and nothing from `genq`, `api` or `workers`.
"""
