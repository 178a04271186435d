//! The built-in data sets (`builtin:NAME`), embedded in the binary so the quickstart runs offline.

/// A built-in data set.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name after `builtin:`.
    pub name: &'static str,
    /// The file name it is written as.
    pub file: &'static str,
    /// Its content.
    pub text: &'static str,
    /// One line about it.
    pub about: &'static str,
}

/// Every built-in data set; `steps/data/builtin/README.md` describes them.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "identity",
        file: "identity.json",
        text: include_str!("../../data/builtin/identity.json"),
        about: "134 alpaca rows about the assistant's identity, with `{{ name }}` and `{{ author }}`",
    },
    Builtin {
        name: "identity_pref",
        file: "identity_pref.json",
        text: include_str!("../../data/builtin/identity_pref.json"),
        about: "70 preference pairs on the same theme",
    },
    Builtin {
        name: "identity_eval",
        file: "identity_eval.json",
        text: include_str!("../../data/builtin/identity_eval.json"),
        about: "24 held-out identity rows",
    },
    Builtin {
        name: "corpus",
        file: "corpus.txt",
        text: include_str!("../../data/builtin/corpus.txt"),
        about: "about 120 KB of plain text for tokenizer training and pretraining",
    },
    Builtin {
        name: "mc_eval",
        file: "mc_eval.json",
        text: include_str!("../../data/builtin/mc_eval.json"),
        about: "40 multiple-choice questions",
    },
];

/// The built-in data set `source` names (`builtin:NAME`), if it names one.
pub fn lookup(source: &str) -> Option<&'static Builtin> {
    let name = source.strip_prefix(lf_schemas::kinds::template::BUILTIN_PREFIX)?;
    BUILTINS.iter().find(|b| b.name == name)
}

/// Whether `source` is meant as a built-in (it starts with `builtin:`).
pub fn is_builtin(source: &str) -> bool {
    source.starts_with(lf_schemas::kinds::template::BUILTIN_PREFIX)
}

/// `builtin:a`, `builtin:b`, … for hints.
pub fn names() -> Vec<String> {
    BUILTINS
        .iter()
        .map(|b| format!("builtin:{}", b.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_found_by_name() {
        assert_eq!(lookup("builtin:identity").unwrap().file, "identity.json");
        assert!(lookup("builtin:nope").is_none());
        assert!(lookup("identity").is_none());
        for b in BUILTINS {
            assert!(!b.text.is_empty());
        }
    }
}
