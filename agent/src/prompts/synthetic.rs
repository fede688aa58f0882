//! Synthetic prompts: seeded English-like text cut to an exact token count.

use std::collections::HashSet;

use lem_common::rng::SplitMix64;

use super::PromptError;

/// Common English words; prompts are random sentences of them.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "time",
    "people",
    "year",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "good",
    "new",
    "first",
    "last",
    "long",
    "great",
    "little",
    "own",
    "other",
    "old",
    "big",
    "high",
    "different",
    "small",
    "large",
    "next",
    "early",
    "young",
    "important",
    "few",
    "public",
    "bad",
    "same",
    "able",
    "say",
    "make",
    "go",
    "know",
    "take",
    "see",
    "come",
    "think",
    "look",
    "want",
    "give",
    "use",
    "find",
    "tell",
    "ask",
    "seem",
    "feel",
    "try",
    "leave",
    "call",
    "explain",
    "describe",
    "write",
    "compare",
    "summarise",
    "river",
    "mountain",
    "garden",
    "energy",
    "music",
    "language",
    "machine",
    "weather",
];

/// Short words that close a small gap when the next word would overshoot.
const FILLERS: &[&str] = &[
    "a", "I", "of", "to", "in", "it", "is", "on", "at", "by", "we", "an", "so", "up", "no", "or",
    "as", "be", "do", "go", "me", "my", "us", "he", "if",
];

/// Attempts at a prompt not generated before, before accepting a duplicate.
const DISTINCT_TRIES: usize = 32;

/// An endless stream of sentence words: capitalised at a sentence start, a full stop at
/// its end. Each word's form depends only on its position, so a prefix never changes as
/// words are appended (which keeps token counts monotone).
struct Sentences {
    rng: SplitMix64,
    left_in_sentence: u64,
}

impl Sentences {
    fn next_word(&mut self) -> String {
        let start = self.left_in_sentence == 0;
        if start {
            self.left_in_sentence = 5 + self.rng.below(10);
        }
        let word = WORDS[self.rng.below(WORDS.len() as u64) as usize];
        self.left_in_sentence -= 1;
        let mut w = if start {
            let mut c = word.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        } else {
            word.to_string()
        };
        if self.left_in_sentence == 0 {
            w.push('.');
        }
        w
    }
}

fn render(words: &[String], extra: &[String]) -> String {
    words
        .iter()
        .chain(extra)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One prompt of `target` tokens, or the longest below it the tokenizer allows.
fn one_prompt(gen: &mut Sentences, target: usize, count: &dyn Fn(&str) -> usize) -> String {
    // Every prompt opens a new sentence.
    gen.left_in_sentence = 0;
    let mut words: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut have = count("");
    while have < target {
        // Add about half the gap at once, halving on overshoot: few tokenizer calls.
        let mut n = (target - have).div_ceil(2);
        loop {
            while pending.len() < n {
                pending.push(gen.next_word());
            }
            let k = count(&render(&words, &pending[..n]));
            if k <= target {
                words.extend(pending.drain(..n));
                have = k;
                break;
            }
            if n > 1 {
                n /= 2;
                continue;
            }
            // One word overshoots: drop it and close the gap with the longest short word
            // that still fits.
            pending.remove(0);
            let best = FILLERS
                .iter()
                .map(|f| (count(&render(&words, &[f.to_string()])), *f))
                .filter(|(k, _)| *k <= target && *k > have)
                .max_by_key(|(k, _)| *k);
            match best {
                Some((k, f)) => {
                    words.push(f.to_string());
                    have = k;
                }
                None => return render(&words, &[]),
            }
            break;
        }
    }
    render(&words, &[])
}

/// `n` distinct prompts of `input_tokens` tokens each, from `seed`. Warnings say where the
/// tokenizer forbade the exact length or distinct prompts could not be made.
pub(crate) fn generate(
    input_tokens: u32,
    n: u32,
    seed: u64,
    count: &dyn Fn(&str) -> usize,
) -> Result<(Vec<String>, Vec<String>), PromptError> {
    if input_tokens == 0 {
        return Err(PromptError::Synthetic(
            "input_tokens must be at least 1".into(),
        ));
    }
    let target = input_tokens as usize;
    let floor = count("");
    if floor >= target {
        return Err(PromptError::Synthetic(format!(
            "the tokenizer counts {floor} tokens for empty text (special tokens), so \
             {target}-token prompts cannot be made; raise input_tokens"
        )));
    }
    let mut gen = Sentences {
        rng: SplitMix64::new(seed),
        left_in_sentence: 0,
    };
    let mut seen = HashSet::new();
    let (mut short, mut duplicates) = (0usize, 0usize);
    let mut prompts = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut prompt = one_prompt(&mut gen, target, count);
        for _ in 0..DISTINCT_TRIES {
            if !seen.contains(&prompt) {
                break;
            }
            prompt = one_prompt(&mut gen, target, count);
        }
        if !seen.insert(prompt.clone()) {
            duplicates += 1;
        }
        if count(&prompt) != target {
            short += 1;
        }
        prompts.push(prompt);
    }
    let mut warnings = Vec::new();
    if short > 0 {
        warnings.push(format!(
            "{short} of {n} synthetic prompts are shorter than {target} tokens: the tokenizer \
             allowed no exact fit"
        ));
    }
    if duplicates > 0 {
        warnings.push(format!(
            "{duplicates} of {n} synthetic prompts repeat an earlier one: {target} tokens \
             leave too few distinct texts"
        ));
    }
    Ok((prompts, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whitespace(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn exact_lengths_with_a_whitespace_tokenizer() {
        for target in [1u32, 2, 7, 64, 513] {
            let (prompts, warnings) = generate(target, 5, 42, &whitespace).unwrap();
            assert_eq!(prompts.len(), 5);
            for p in &prompts {
                assert_eq!(whitespace(p), target as usize, "{p}");
            }
            assert!(warnings.is_empty(), "{warnings:?}");
            let unique: HashSet<_> = prompts.iter().collect();
            assert_eq!(unique.len(), 5, "prompts are distinct");
        }
    }

    #[test]
    fn deterministic_per_seed_and_english_like() {
        let a = generate(40, 3, 7, &whitespace).unwrap().0;
        assert_eq!(a, generate(40, 3, 7, &whitespace).unwrap().0);
        assert_ne!(a, generate(40, 3, 8, &whitespace).unwrap().0);
        assert!(
            a[0].starts_with(|c: char| c.is_ascii_uppercase()),
            "{}",
            a[0]
        );
        assert!(a[0].contains(". "), "has sentences: {}", a[0]);
    }

    #[test]
    fn subword_tokenizer_uses_fillers_to_hit_the_target() {
        // Roughly BPE-like: a word costs one token per started 4 characters, "." costs one.
        let bpe = |s: &str| {
            s.split_whitespace()
                .map(|w| w.trim_end_matches('.').len().div_ceil(4) + usize::from(w.ends_with('.')))
                .sum::<usize>()
        };
        let (prompts, warnings) = generate(33, 8, 1, &bpe).unwrap();
        assert!(prompts.iter().all(|p| bpe(p) == 33), "{prompts:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn closest_below_when_no_exact_fit_and_special_token_floor() {
        // Every word costs two tokens: odd targets cannot be met.
        let two = |s: &str| 2 * whitespace(s);
        let (prompts, warnings) = generate(7, 2, 3, &two).unwrap();
        assert!(prompts.iter().all(|p| two(p) == 6), "{prompts:?}");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("2 of 2 synthetic prompts are shorter than 7"),
            "{warnings:?}"
        );
        // A tokenizer adding BOS: the empty text already costs one.
        let bos = |s: &str| 1 + whitespace(s);
        let (prompts, _) = generate(5, 1, 3, &bos).unwrap();
        assert_eq!(bos(&prompts[0]), 5);
        let e = generate(1, 1, 3, &bos).unwrap_err().to_string();
        assert!(e.contains("1 tokens for empty text"), "{e}");
        let e = generate(0, 1, 3, &whitespace).unwrap_err().to_string();
        assert!(e.contains("input_tokens must be at least 1"), "{e}");
    }
}
