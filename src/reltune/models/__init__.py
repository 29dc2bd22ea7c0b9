"""VLM backends (DESIGN §8, §9).

backbone    InstructBLIP presets (flan-t5-xl, vicuna-7b, tiny), loading, saving, freezing, LoRA
tokenizer   byte-level BPE tokenizer of the tiny backbone
images      image loading, union-box crops, left/right-consistent augmentation
training    the training loop (AdamW, warm-up + cosine, accelerate/DDP, checkpoints, dvclive)
pretrain    generic-question pretraining of the tiny backbone
lavis       LAVIS InstructBLIP checkpoint conversion

Answering questions with a backbone (generation, scoring, prediction) is reltune.inference.
"""
