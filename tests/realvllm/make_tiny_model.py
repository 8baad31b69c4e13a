"""Generate the tiny model the real-vLLM tier serves (no download is possible here).

A Llama config with 2 layers, hidden size 256, 4 attention heads (head_dim 64: vLLM's CPU
attention rejects 16), 2 KV heads, max_position_embeddings 8192, random bf16 weights, and a
512-token byte-level BPE tokenizer trained on a few lines of text. Deterministic (seeded).
"""
from __future__ import annotations

import sys
from pathlib import Path

TEXT = [
    "selfheal keeps vLLM servers healthy by healing their configuration.",
    "The quick brown fox jumps over the lazy dog.",
    "Free memory on device on startup is less than desired GPU memory utilization.",
    "To serve at least one request with the model's max seq len, more KV cache is needed.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 4096 8192 16384.",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 50


def main(out: str) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.model_max_length = 8192
    fast.save_pretrained(target)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=fast.vocab_size if fast.vocab_size >= 512 else 512, hidden_size=256, intermediate_size=512,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=8192, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        torch_dtype="bfloat16", tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)
    print(f"tiny model written to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
