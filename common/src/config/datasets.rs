//! Built-in prompt dataset aliases (the seed tool's names and meanings).

/// A short name for a Hugging Face dataset, its split and the column holding prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetAlias {
    pub alias: &'static str,
    /// Hugging Face dataset repo id.
    pub repo: &'static str,
    /// Dataset configuration ("subset"), where the dataset has several.
    pub subset: Option<&'static str>,
    pub split: &'static str,
    pub column: &'static str,
    pub description: &'static str,
}

pub const DATASET_ALIASES: &[DatasetAlias] = &[
    DatasetAlias {
        alias: "alpaca",
        repo: "tatsu-lab/alpaca",
        subset: None,
        split: "train",
        column: "instruction",
        description: "52k instruction-following prompts (Stanford Alpaca)",
    },
    DatasetAlias {
        alias: "gsm8k",
        repo: "gsm8k",
        subset: Some("main"),
        split: "train",
        column: "question",
        description: "grade-school maths word problems",
    },
    DatasetAlias {
        alias: "mmlu",
        repo: "cais/mmlu",
        subset: Some("all"),
        split: "test",
        column: "question",
        description: "multiple-choice questions over 57 subjects",
    },
    DatasetAlias {
        alias: "sharegpt",
        repo: "anon8231489123/ShareGPT_Vicuna_unfiltered",
        subset: None,
        split: "train",
        column: "conversations",
        description: "real user conversations (first human turn is the prompt)",
    },
];

/// The alias of that name, if it is one.
pub fn dataset_alias(name: &str) -> Option<&'static DatasetAlias> {
    DATASET_ALIASES.iter().find(|a| a.alias == name)
}
