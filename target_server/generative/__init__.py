"""The bundled generative model (`--model tinylm`): a byte-level decoder, its engine and its OpenAI API."""
