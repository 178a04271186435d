//! Text-overlap metrics of generated replies against references: sentence BLEU-4 with NLTK's
//! smoothing method 3, and ROUGE-1, ROUGE-2 and ROUGE-L F1, over words where Chinese, Japanese and
//! Korean text counts one token per character.
//!
//! Both are computed per sample and averaged over samples, and reported as percentages (0–100), as
//! LLaMA-Factory's `predict_bleu-4` / `predict_rouge-*` are.

use std::collections::HashMap;

/// Whether `c` is written without spaces between words in its script (Han ideographs, kana, Hangul),
/// or is CJK punctuation: such characters are tokens of their own.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF        // Hangul Jamo
        | 0x2E80..=0x2FDF      // CJK radicals
        | 0x3000..=0x303F      // CJK symbols and punctuation
        | 0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3130..=0x318F      // Hangul compatibility Jamo
        | 0x31F0..=0x31FF      // Katakana phonetic extensions
        | 0x3400..=0x4DBF      // CJK extension A
        | 0x4E00..=0x9FFF      // CJK unified ideographs
        | 0xAC00..=0xD7AF      // Hangul syllables
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0xFF00..=0xFFEF      // half- and full-width forms
        | 0x20000..=0x2FA1F    // CJK extensions B.. and compatibility supplement
    )
}

/// Splits text into tokens for BLEU and ROUGE: each CJK character (see [`is_cjk`]) is a token, runs of
/// other letters and digits are words, every other non-space character (punctuation, symbols) is a
/// token of its own, and whitespace separates. Case is kept.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() && !is_cjk(c) {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// Matches of `hyp`'s n-grams in `reference`, each clipped to its count there, and the number of
/// n-grams in `hyp`.
fn overlap(hyp: &[String], reference: &[String], n: usize) -> (usize, usize) {
    let h = ngrams(hyp, n);
    let r = ngrams(reference, n);
    let matched = h
        .iter()
        .map(|(g, &c)| c.min(r.get(g).copied().unwrap_or(0)))
        .sum();
    (matched, hyp.len().saturating_sub(n - 1))
}

/// Sentence BLEU-4 (uniform weights) of `hyp` against one reference, in 0–1, as NLTK's
/// `sentence_bleu(..., smoothing_function=SmoothingFunction().method3)` computes it:
///
/// - modified n-gram precision `p_n = matches / max(1, n-grams of hyp)`;
/// - 0 when no unigram matches;
/// - smoothing method 3 (Chen & Cherry 2014, from mteval-v13a): the `k`-th precision with no match
///   becomes `1 / (2^k · denominator)`;
/// - brevity penalty `exp(1 − r/c)` when the hypothesis is not longer than the reference.
pub fn bleu4(hyp: &[String], reference: &[String]) -> f64 {
    if hyp.is_empty() {
        return 0.0;
    }
    let mut log_sum = 0.0;
    let mut k = 0;
    for n in 1..=4 {
        let (matched, total) = overlap(hyp, reference, n);
        let denom = total.max(1) as f64;
        if n == 1 && matched == 0 {
            return 0.0;
        }
        let p = if matched == 0 {
            k += 1;
            1.0 / (2f64.powi(k) * denom)
        } else {
            matched as f64 / denom
        };
        log_sum += 0.25 * p.ln();
    }
    let (c, r) = (hyp.len() as f64, reference.len() as f64);
    let bp = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    bp * log_sum.exp()
}

fn f1(matched: usize, hyp_len: usize, ref_len: usize) -> f64 {
    if matched == 0 || hyp_len == 0 || ref_len == 0 {
        return 0.0;
    }
    let p = matched as f64 / hyp_len as f64;
    let r = matched as f64 / ref_len as f64;
    2.0 * p * r / (p + r)
}

/// ROUGE-N F1 (0–1): clipped n-gram matches over the n-grams of the hypothesis (precision) and of the
/// reference (recall).
pub fn rouge_n(hyp: &[String], reference: &[String], n: usize) -> f64 {
    let (matched, hyp_total) = overlap(hyp, reference, n);
    f1(matched, hyp_total, reference.len().saturating_sub(n - 1))
}

/// Length of the longest common subsequence.
pub fn lcs(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L F1 (0–1): the longest common subsequence over the lengths of hypothesis and reference.
pub fn rouge_l(hyp: &[String], reference: &[String]) -> f64 {
    f1(lcs(hyp, reference), hyp.len(), reference.len())
}

/// The scores of one prediction, in 0–100.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TextScores {
    /// BLEU-4.
    pub bleu_4: f64,
    /// ROUGE-1 F1.
    pub rouge_1: f64,
    /// ROUGE-2 F1.
    pub rouge_2: f64,
    /// ROUGE-L F1.
    pub rouge_l: f64,
}

/// Scores `prediction` against `reference` (both plain text).
pub fn score(prediction: &str, reference: &str) -> TextScores {
    let h = tokenize(prediction);
    let r = tokenize(reference);
    TextScores {
        bleu_4: 100.0 * bleu4(&h, &r),
        rouge_1: 100.0 * rouge_n(&h, &r, 1),
        rouge_2: 100.0 * rouge_n(&h, &r, 2),
        rouge_l: 100.0 * rouge_l(&h, &r),
    }
}

/// The mean of per-sample scores.
pub fn mean(scores: &[TextScores]) -> TextScores {
    let n = scores.len().max(1) as f64;
    let sum = |f: fn(&TextScores) -> f64| scores.iter().map(f).sum::<f64>() / n;
    TextScores {
        bleu_4: sum(|s| s.bleu_4),
        rouge_1: sum(|s| s.rouge_1),
        rouge_2: sum(|s| s.rouge_2),
        rouge_l: sum(|s| s.rouge_l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn tokenize_splits_cjk_per_character_and_punctuation_apart() {
        assert_eq!(
            tokenize("Hello, 世界! It's 2024."),
            vec!["Hello", ",", "世", "界", "!", "It", "'", "s", "2024", "."]
        );
        assert_eq!(
            tokenize("저는 Lumi입니다"),
            vec!["저", "는", "Lumi", "입", "니", "다"]
        );
        assert_eq!(tokenize("  "), Vec::<String>::new());
        assert_eq!(
            tokenize("日本語のテキスト"),
            vec!["日", "本", "語", "の", "テ", "キ", "ス", "ト"]
        );
    }

    #[test]
    fn bleu_and_rouge_of_a_hand_computed_english_pair() {
        let h = tokenize("the cat sat on the mat");
        let r = tokenize("the cat is on the mat");
        // p1 = 5/6, p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat), p4 = 0/3 → 1/(2·3);
        // equal lengths: no brevity penalty.
        close(
            bleu4(&h, &r),
            (5.0 / 6.0 * 3.0 / 5.0 * 1.0 / 4.0 * 1.0 / 6.0f64).powf(0.25),
        );
        close(rouge_n(&h, &r, 1), 5.0 / 6.0);
        close(rouge_n(&h, &r, 2), 3.0 / 5.0);
        // LCS: the cat on the mat.
        close(rouge_l(&h, &r), 5.0 / 6.0);
    }

    #[test]
    fn bleu_and_rouge_of_a_hand_computed_chinese_pair() {
        let h = tokenize("我爱北京");
        let r = tokenize("我爱上海");
        // p1 = 2/4, p2 = 1/3, p3 = 0/2 → 1/(2·2), p4 = 0/1 → 1/(4·1).
        close(bleu4(&h, &r), (0.5 * 1.0 / 3.0 * 0.25 * 0.25f64).powf(0.25));
        close(rouge_n(&h, &r, 1), 0.5);
        close(rouge_n(&h, &r, 2), 1.0 / 3.0);
        close(rouge_l(&h, &r), 0.5);
    }

    #[test]
    fn brevity_penalty_short_and_degenerate_hypotheses() {
        let r = tokenize("a b c d e f");
        let h = tokenize("a b c");
        // p1 = 1, p2 = 1, p3 = 1, p4 = 0/1 → 1/2; BP = exp(1 − 6/3).
        close(bleu4(&h, &r), (-1.0f64).exp() * 0.5f64.powf(0.25));
        assert_eq!(bleu4(&tokenize("x y"), &r), 0.0);
        assert_eq!(bleu4(&[], &r), 0.0);
        assert_eq!(rouge_l(&[], &r), 0.0);
        close(bleu4(&r, &r), 1.0);
        let s = score("a b c d e f", "a b c d e f");
        assert_eq!(
            (s.bleu_4, s.rouge_1, s.rouge_2, s.rouge_l),
            (100.0, 100.0, 100.0, 100.0)
        );
    }

    #[test]
    fn lcs_is_a_subsequence_not_a_substring() {
        let a = tokenize("a x b y c");
        let b = tokenize("a b c");
        assert_eq!(lcs(&a, &b), 3);
        close(rouge_l(&a, &b), 2.0 * 0.6 * 1.0 / 1.6);
    }
}
