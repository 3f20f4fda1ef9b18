"""Small proxy language models: tokenizer, token files and mixture sampling, a tiny GPT, its trainer."""
