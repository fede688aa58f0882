//! SentencePiece-style (GGUF `tokenizer.ggml.model = llama`) tokenizer, as llama.cpp runs
//! it: special tokens split out of the text first (longest first), then in each remaining
//! piece spaces become `▁`, the piece is cut into UTF-8 characters and adjacent symbols are
//! merged, best vocabulary score first (leftmost on ties), while the merged text is a
//! token; symbols that are not tokens become byte tokens `<0xXX>`. Gemma uses it.
//!
//! Written from the algorithm's description, not from llama.cpp's source; the token ids are
//! checked against llama.cpp by `scripts/reference/gemma3_llamacpp.py`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[cfg(test)]
pub(crate) const TYPE_NORMAL: i64 = 1;
pub(crate) const TYPE_CONTROL: i64 = 3;
pub(crate) const TYPE_USER_DEFINED: i64 = 4;
pub(crate) const TYPE_BYTE: i64 = 6;

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

#[derive(Debug, Clone)]
pub(crate) struct SpmTokenizer {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i64>,
    ids: HashMap<String, u32>,
    /// Control and user-defined tokens, longest text first: split out before merging.
    specials: Vec<u32>,
    /// Id of `<0xXX>` for every byte value.
    byte_ids: Vec<u32>,
}

/// Why a vocabulary cannot be used; the caller names the GGUF key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpmError {
    LengthMismatch {
        tokens: usize,
        scores: usize,
        types: usize,
    },
    MissingByteToken(u8),
}

impl std::fmt::Display for SpmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpmError::LengthMismatch {
                tokens,
                scores,
                types,
            } => write!(
                f,
                "{tokens} tokens, {scores} scores and {types} token types"
            ),
            SpmError::MissingByteToken(b) => {
                write!(f, "no byte-fallback token <0x{b:02X}> in the vocabulary")
            }
        }
    }
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the merged text, to recognise candidates made stale by other merges.
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// The heap's top is the highest score, then the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// One symbol of the piece being merged: a byte range, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

impl SpmTokenizer {
    pub(crate) fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i64>,
    ) -> Result<Self, SpmError> {
        if tokens.len() != scores.len() || tokens.len() != types.len() {
            return Err(SpmError::LengthMismatch {
                tokens: tokens.len(),
                scores: scores.len(),
                types: types.len(),
            });
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // The first id wins when a text appears twice.
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut specials: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                matches!(types[i as usize], TYPE_CONTROL | TYPE_USER_DEFINED)
                    && !tokens[i as usize].is_empty()
            })
            .collect();
        // Longest first, so `\n\n` is not split as two `\n`; ties by id, deterministic.
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        let byte_ids = (0..=255u8)
            .map(|b| {
                ids.get(&format!("<0x{b:02X}>"))
                    .copied()
                    .ok_or(SpmError::MissingByteToken(b))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tokens,
            scores,
            types,
            ids,
            specials,
            byte_ids,
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub(crate) fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokens.get(id as usize).cloned()
    }

    /// Token ids of `text` (no BOS; the caller adds it).
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for fragment in self.split_specials(text) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(t) => self.encode_piece(&t.replace(' ', "\u{2581}"), &mut out),
            }
        }
        out
    }

    /// Text of `ids`: `▁` back to spaces, byte tokens to their bytes; control tokens
    /// (BOS, EOS, turn markers) left out.
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String, u32> {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let (Some(text), Some(&kind)) = (self.tokens.get(i), self.types.get(i)) else {
                return Err(id);
            };
            match kind {
                TYPE_CONTROL => {}
                TYPE_BYTE => match byte_of(text) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(text.as_bytes()),
                },
                _ => bytes.extend_from_slice(text.replace(SPACE, " ").as_bytes()),
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Cuts `text` at every occurrence of a special token, longest tokens first.
    fn split_specials<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let special = self.tokens[id as usize].as_str();
            // Most specials never occur; skip the rebuild unless one does.
            let occurs = fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(special)));
            if !occurs {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for f in fragments {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(special) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + special.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Merges one special-free piece (spaces already `▁`) and appends its ids.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, ch)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: ch.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        if symbols.is_empty() {
            return;
        }
        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.push_bigram(text, &symbols, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: one side was merged away or grew since this candidate was made.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = symbols[b.left].prev {
                self.push_bigram(text, &symbols, p, b.left, &mut queue);
            }
            if let Some(n) = symbols[b.left].next {
                self.push_bigram(text, &symbols, b.left, n, &mut queue);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().map(|b| self.byte_ids[b as usize])),
            }
            at = s.next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (l, r) = (symbols[left], symbols[right]);
        let merged = &text[l.start..r.start + r.len];
        if let Some(&id) = self.ids.get(merged) {
            queue.push(Bigram {
                left,
                right,
                score: self.scores[id as usize],
                len: merged.len(),
            });
        }
    }

    /// Whether `id` is a normal (mergeable) token: for tests.
    #[cfg(test)]
    fn is_normal(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TYPE_NORMAL)
    }
}

/// The byte of a `<0xXX>` token.
fn byte_of(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary with every byte token, then `extra` (text, score, type).
    fn vocab(extra: &[(&str, f32, i64)]) -> SpmTokenizer {
        let mut tokens = vec!["<unk>".to_string()];
        let mut scores = vec![0.0];
        let mut types = vec![TYPE_CONTROL];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(TYPE_BYTE);
        }
        for (t, s, k) in extra {
            tokens.push(t.to_string());
            scores.push(*s);
            types.push(*k);
        }
        SpmTokenizer::new(tokens, scores, types).unwrap()
    }

    fn id(t: &SpmTokenizer, s: &str) -> u32 {
        t.token_to_id(s).unwrap()
    }

    #[test]
    fn merges_best_score_first_and_falls_back_to_bytes() {
        // "abc": "ab" (-1) beats "bc" (-2), then "abc" is not a token: [ab, c].
        let t = vocab(&[
            ("a", -5.0, TYPE_NORMAL),
            ("b", -5.0, TYPE_NORMAL),
            ("c", -5.0, TYPE_NORMAL),
            ("ab", -1.0, TYPE_NORMAL),
            ("bc", -2.0, TYPE_NORMAL),
        ]);
        assert_eq!(t.encode("abc"), vec![id(&t, "ab"), id(&t, "c")]);
        // With "bc" scoring higher the split moves.
        let t2 = vocab(&[
            ("a", -5.0, TYPE_NORMAL),
            ("b", -5.0, TYPE_NORMAL),
            ("c", -5.0, TYPE_NORMAL),
            ("ab", -2.0, TYPE_NORMAL),
            ("bc", -1.0, TYPE_NORMAL),
        ]);
        assert_eq!(t2.encode("abc"), vec![id(&t2, "a"), id(&t2, "bc")]);
        // "é" is not in the vocabulary: its two UTF-8 bytes become byte tokens.
        assert_eq!(
            t.encode("aé"),
            vec![id(&t, "a"), id(&t, "<0xC3>"), id(&t, "<0xA9>")]
        );
        assert!(t.is_normal(id(&t, "ab")));
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        // "aaa": both pairs are "aa" at the same score; the left one merges.
        let t = vocab(&[("a", -5.0, TYPE_NORMAL), ("aa", -1.0, TYPE_NORMAL)]);
        assert_eq!(t.encode("aaa"), vec![id(&t, "aa"), id(&t, "a")]);
    }

    #[test]
    fn spaces_become_visible_and_specials_split_longest_first() {
        let t = vocab(&[
            // Merging goes through pieces that are tokens: h+i, then ▁+hi.
            ("\u{2581}hi", -1.0, TYPE_NORMAL),
            ("hi", -2.0, TYPE_NORMAL),
            ("\u{2581}", -3.0, TYPE_NORMAL),
            ("h", -4.0, TYPE_NORMAL),
            ("i", -4.0, TYPE_NORMAL),
            ("<turn>", 0.0, TYPE_CONTROL),
            ("\n", 0.0, TYPE_USER_DEFINED),
            ("\n\n", 0.0, TYPE_USER_DEFINED),
        ]);
        let ids = t.encode("<turn> hi\n\n\n hi");
        let want = vec![
            id(&t, "<turn>"),
            id(&t, "\u{2581}hi"),
            id(&t, "\n\n"),
            id(&t, "\n"),
            id(&t, "\u{2581}hi"),
        ];
        assert_eq!(ids, want);
        // Decoding drops the control token and restores spaces and bytes.
        assert_eq!(t.decode(&ids).unwrap(), " hi\n\n\n hi");
        let bytes = [id(&t, "<0xC3>"), id(&t, "<0xA9>")];
        assert_eq!(t.decode(&bytes).unwrap(), "é");
        assert_eq!(t.decode(&[9999]), Err(9999));
    }

    #[test]
    fn refuses_inconsistent_or_byteless_vocabularies() {
        let e = SpmTokenizer::new(vec!["a".into()], vec![], vec![TYPE_NORMAL]).unwrap_err();
        assert_eq!(
            e,
            SpmError::LengthMismatch {
                tokens: 1,
                scores: 0,
                types: 1
            }
        );
        let e = SpmTokenizer::new(vec!["a".into()], vec![0.0], vec![TYPE_NORMAL]).unwrap_err();
        assert_eq!(e, SpmError::MissingByteToken(0));
    }
}
