//! The synthetic model presets a `synthetic = "..."` key may name: plain data (shapes), read by
//! the config check and by the synthetic writer in `acquire::synthetic`.

/// Architecture family of a preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Gpt2,
    Llama,
}

/// A synthetic model shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub arch: Arch,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx: u64,
}

/// Every preset a `synthetic = "..."` key may name.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        description: "GPT-2 architecture, 2 layers of 256, 2k vocab (~6 MB F16): for tests",
        arch: Arch::Gpt2,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 1024,
        n_vocab: 2048,
        n_ctx: 1024,
    },
    Preset {
        name: "tiny-llama",
        description: "Llama architecture (GQA, SentencePiece), 2 layers of 256: for tests",
        arch: Arch::Llama,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 768,
        n_vocab: 2048,
        n_ctx: 4096,
    },
    Preset {
        name: "gpt2",
        description: "GPT-2 (124M) shape",
        arch: Arch::Gpt2,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        n_head_kv: 12,
        n_ff: 3072,
        n_vocab: 50257,
        n_ctx: 1024,
    },
    Preset {
        name: "gpt2-medium",
        description: "GPT-2-Medium (355M) shape",
        arch: Arch::Gpt2,
        n_embd: 1024,
        n_layer: 24,
        n_head: 16,
        n_head_kv: 16,
        n_ff: 4096,
        n_vocab: 50257,
        n_ctx: 1024,
    },
    Preset {
        name: "llama-7b",
        description: "Mistral-7B shape (Llama architecture, GQA 32/8, FFN 14336, 32k vocab)",
        arch: Arch::Llama,
        n_embd: 4096,
        n_layer: 32,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        n_vocab: 32000,
        n_ctx: 32768,
    },
];

/// Looks a preset up by name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Names of all presets, for error messages.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

impl Preset {
    /// The GGUF `general.architecture` of the preset.
    pub fn arch_name(&self) -> &'static str {
        match self.arch {
            Arch::Gpt2 => "gpt2",
            Arch::Llama => "llama",
        }
    }
}
