//! The guard of the semantic tier: two texts an embedding calls near may still ask different
//! things, and the known ways they do are cheap to see in the words. A candidate is refused
//! when, against the query, it
//! - holds different numbers, quantities or dates (`in 2 months` / `in 3 months`,
//!   `2016` / `2017`, `twice` / `three times`);
//! - differs in negation (`can I` / `can I not`, `with` / `without`);
//! - holds the opposite of one of the query's words (`turn on` / `turn off`, `gain` /
//!   `lose`, `before` / `after`) from a list of common opposites;
//! - names an entity the other does not (a capitalized word inside a sentence, or an
//!   acronym: `Java` / `Python`, `iPhone` / `Android`, `UK` / `US`);
//! - names the same two entities the other way round across the same directed word
//!   (`PDF to HTML` / `HTML to PDF`, `Is Java faster than Python` / `... Python faster than
//!   Java`); `Java or Python` / `Python or Java` and `from London to Paris` / `to Paris from
//!   London` pass.
//!
//! Plain embedding similarity scores exactly these pairs high (they share every other
//! word), which is why the guard exists; `bench/` measures what it costs and saves on
//! labelled question pairs.
//!
//! Must not import: anything of the domain.

use std::collections::{HashMap, HashSet};

/// Why the guard refused a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conflict {
    /// Different numbers, quantities or dates.
    Number,
    /// One side negated, the other not.
    Negation,
    /// A word on one side, its opposite on the other.
    Polarity,
    /// A named entity on one side only.
    Entity,
    /// The same entities the other way round across a directed word.
    Order,
}

impl Conflict {
    /// Every conflict, in the order the guard checks them.
    pub const ALL: [Conflict; 5] = [
        Conflict::Number,
        Conflict::Negation,
        Conflict::Polarity,
        Conflict::Entity,
        Conflict::Order,
    ];

    /// Its name in statistics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Conflict::Number => "number",
            Conflict::Negation => "negation",
            Conflict::Polarity => "polarity",
            Conflict::Entity => "entity",
            Conflict::Order => "order",
        }
    }
}

/// Whether `candidate` may answer `query`: `Err` names the first conflict found.
pub fn check(query: &str, candidate: &str) -> Result<(), Conflict> {
    let q = Words::of(query);
    let c = Words::of(candidate);
    if q.numbers != c.numbers {
        return Err(Conflict::Number);
    }
    if q.negated() != c.negated() {
        return Err(Conflict::Negation);
    }
    if opposed(&q, &c) {
        return Err(Conflict::Polarity);
    }
    let unmatched = |a: &Words, b: &Words| {
        a.entities
            .iter()
            .any(|e| !b.stems.contains(stem(e).as_str()))
    };
    if unmatched(&q, &c) || unmatched(&c, &q) {
        return Err(Conflict::Entity);
    }
    if reversed(&q, &c) {
        return Err(Conflict::Order);
    }
    Ok(())
}

/// The words of a text, as the guard compares them.
struct Words {
    /// Lowercased words, each with the position of its first occurrence (numbers count
    /// as words).
    lower: HashMap<String, usize>,
    /// Their stems.
    stems: HashSet<String>,
    /// Numbers, normalized (`2`, `2nd`, `1.5`), sorted.
    numbers: Vec<String>,
    /// Lowercased capitalized words inside a sentence, and acronyms.
    entities: HashSet<String>,
    /// The directed words (`to`, `than`, ...) with their positions.
    directed: Vec<(usize, &'static str)>,
}

impl Words {
    fn of(text: &str) -> Self {
        let mut lower = HashMap::new();
        let mut numbers = Vec::new();
        let mut entities = HashSet::new();
        let mut directed = Vec::new();
        let mut position = 0;
        let mut sentence_start = true;
        for token in tokens(text) {
            match token {
                Token::End => sentence_start = true,
                Token::Number(n) => {
                    numbers.push(n);
                    position += 1;
                    sentence_start = false;
                }
                Token::Word(w) => {
                    let l = w.to_lowercase();
                    if let Some(n) = number_word(&l) {
                        numbers.push(n.to_owned());
                    }
                    let upper_first = w.chars().next().is_some_and(char::is_uppercase);
                    let acronym = w.chars().count() > 1 && w.chars().all(char::is_uppercase);
                    if w != "I" && (acronym || (upper_first && !sentence_start)) {
                        entities.insert(l.clone());
                    }
                    if let Some(d) = DIRECTED.iter().find(|d| **d == l) {
                        directed.push((position, *d));
                    }
                    lower.entry(l).or_insert(position);
                    position += 1;
                    sentence_start = false;
                }
            }
        }
        numbers.sort();
        let stems = lower.keys().map(|w| stem(w)).collect();
        Self {
            lower,
            stems,
            numbers,
            entities,
            directed,
        }
    }

    /// The directed words strictly between positions `a` and `b`.
    fn directed_between(&self, a: usize, b: usize) -> HashSet<&'static str> {
        let (from, to) = (a.min(b), a.max(b));
        self.directed
            .iter()
            .filter(|(p, _)| from < *p && *p < to)
            .map(|(_, d)| *d)
            .collect()
    }

    fn negated(&self) -> bool {
        NEGATIONS.iter().any(|n| self.lower.contains_key(*n))
    }
}

enum Token {
    Word(String),
    Number(String),
    End,
}

/// Words (letters, with `n't` split off as its own word), numbers (digits with inner `.` or
/// `,` and an ordinal or unit suffix; thousands separators dropped) and sentence ends.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // `don't`, `can't`, `isn’t`: the word, then `n't`.
            let apostrophe = i < chars.len() && matches!(chars[i], '\'' | '\u{2019}');
            if apostrophe && word.len() > 1 && word.ends_with(['n', 'N']) && next_is_t(&chars, i) {
                let stemmed: String = word[..word.len() - 1].to_owned();
                out.push(Token::Word(stemmed));
                out.push(Token::Word("n't".to_owned()));
                i += 2;
            } else {
                out.push(Token::Word(word));
            }
        } else if ch.is_ascii_digit() {
            let mut n = String::new();
            while i < chars.len() {
                let c = chars[i];
                if c.is_ascii_digit() {
                    n.push(c);
                } else if matches!(c, '.' | ',')
                    && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                {
                    if c == '.' {
                        n.push('.');
                    }
                } else {
                    break;
                }
                i += 1;
            }
            // A suffix glued to the number: `2nd`, `5k`, `10th`, `1990s`.
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            let suffix: String = chars[start..i].iter().collect::<String>().to_lowercase();
            if matches!(suffix.as_str(), "st" | "nd" | "rd" | "th" | "s") {
                n.push_str(&suffix);
            } else if !suffix.is_empty() {
                out.push(Token::Number(n));
                out.push(Token::Word(suffix));
                continue;
            }
            out.push(Token::Number(n));
        } else {
            if matches!(ch, '.' | '?' | '!' | ':' | ';' | '\n') {
                out.push(Token::End);
            }
            i += 1;
        }
    }
    out
}

fn next_is_t(chars: &[char], apostrophe: usize) -> bool {
    chars
        .get(apostrophe + 1)
        .is_some_and(|c| matches!(c, 't' | 'T'))
        && !chars.get(apostrophe + 2).is_some_and(|c| c.is_alphabetic())
}

/// A crude stem, enough to match `studying` with `study` and `iPhones` with `iphone`.
fn stem(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.chars().count() >= 3
        {
            return base.to_owned();
        }
    }
    word.to_owned()
}

/// The number a word spells, if it is one. Not `one` (`what must one do`), `first` or
/// `second` (`at first`, `a second`), which are as often no number at all.
fn number_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "zero" => "0",
        "two" | "twice" => "2",
        "three" | "thrice" => "3",
        "four" => "4",
        "five" => "5",
        "six" => "6",
        "seven" => "7",
        "eight" => "8",
        "nine" => "9",
        "ten" => "10",
        "eleven" => "11",
        "twelve" | "dozen" => "12",
        "fifteen" => "15",
        "twenty" => "20",
        "thirty" => "30",
        "forty" => "40",
        "fifty" => "50",
        "hundred" => "100",
        "thousand" => "1000",
        "million" => "1000000",
        "billion" => "1000000000",
        "half" => "0.5",
        "third" => "3rd",
        "fourth" => "4th",
        "fifth" => "5th",
        _ => return None,
    })
}

/// Words that negate.
const NEGATIONS: [&str; 11] = [
    "not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot", "n't",
];

/// Common opposites: one on each side (and not both on either) refuses the candidate.
const OPPOSITES: &[(&str, &str)] = &[
    ("on", "off"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("gain", "lose"),
    ("gain", "loss"),
    ("win", "lose"),
    ("buy", "sell"),
    ("buyer", "seller"),
    ("best", "worst"),
    ("better", "worse"),
    ("before", "after"),
    ("enable", "disable"),
    ("start", "stop"),
    ("open", "close"),
    ("add", "remove"),
    ("up", "down"),
    ("more", "less"),
    ("most", "least"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("high", "low"),
    ("higher", "lower"),
    ("positive", "negative"),
    ("true", "false"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("husband", "wife"),
    ("boyfriend", "girlfriend"),
    ("mother", "father"),
    ("son", "daughter"),
    ("brother", "sister"),
    ("rich", "poor"),
    ("hot", "cold"),
    ("import", "export"),
    ("input", "output"),
    ("upload", "download"),
    ("past", "future"),
    ("advantages", "disadvantages"),
    ("differ", "similar"),
    ("different", "similar"),
    ("difference", "similarity"),
    ("differences", "similarities"),
    ("pros", "cons"),
    ("love", "hate"),
    ("like", "dislike"),
    ("agree", "disagree"),
    ("good", "bad"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("cheap", "expensive"),
    ("fast", "slow"),
    ("first", "last"),
    ("old", "new"),
    ("young", "old"),
    ("big", "small"),
    ("large", "small"),
    ("long", "short"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("happy", "sad"),
    ("success", "failure"),
    ("inside", "outside"),
    ("internal", "external"),
    ("top", "bottom"),
    ("left", "right"),
    ("north", "south"),
    ("east", "west"),
    ("day", "night"),
    ("summer", "winter"),
    ("pass", "fail"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("push", "pull"),
    ("send", "receive"),
    ("lend", "borrow"),
    ("safe", "dangerous"),
    ("weak", "strong"),
    ("heavy", "light"),
    ("early", "late"),
    ("above", "below"),
    ("over", "under"),
    ("encrypt", "decrypt"),
    ("install", "uninstall"),
    ("lock", "unlock"),
    ("employer", "employee"),
    ("he", "she"),
    ("his", "her"),
    ("him", "her"),
];

fn opposed(q: &Words, c: &Words) -> bool {
    OPPOSITES.iter().any(|(x, y)| {
        let one_way = |a: &Words, b: &Words| {
            a.lower.contains_key(*x)
                && b.lower.contains_key(*y)
                && !a.lower.contains_key(*y)
                && !b.lower.contains_key(*x)
        };
        one_way(q, c) || one_way(c, q)
    })
}

/// Words that give a direction to the entities on either side of them.
const DIRECTED: [&str; 7] = ["to", "into", "onto", "than", "from", "toward", "towards"];

/// Whether two entities both texts name stand the other way round, with the same directed
/// word between them on both sides.
fn reversed(q: &Words, c: &Words) -> bool {
    // Each shared entity with its first position in the query and in the candidate.
    let shared: Vec<(usize, usize)> = q
        .entities
        .intersection(&c.entities)
        .map(|e| (q.lower[e], c.lower[e]))
        .collect();
    shared.iter().enumerate().any(|(i, &(qx, cx))| {
        shared[i + 1..].iter().any(|&(qy, cy)| {
            (qx < qy) != (cx < cy)
                && !q
                    .directed_between(qx, qy)
                    .is_disjoint(&c.directed_between(cx, cy))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_false_hits_are_refused() {
        let refused = [
            (
                "How do I turn on dark mode?",
                "How do I turn off dark mode?",
                Conflict::Polarity,
            ),
            (
                "How can I lose weight in 2 months?",
                "How can I lose weight in 3 months?",
                Conflict::Number,
            ),
            (
                "How can I lose weight in two months?",
                "How can I lose weight in 3 months?",
                Conflict::Number,
            ),
            (
                "Why can't I sleep at night?",
                "Why can I sleep at night?",
                Conflict::Negation,
            ),
            (
                "Is coffee healthy without sugar?",
                "Is coffee healthy with sugar?",
                Conflict::Negation,
            ),
            (
                "What is the best way to learn Java?",
                "What is the best way to learn Python?",
                Conflict::Entity,
            ),
            (
                "What were the best movies of 2016?",
                "What were the best movies of 2017?",
                Conflict::Number,
            ),
            (
                "How do I gain weight?",
                "How do I lose weight?",
                Conflict::Polarity,
            ),
            (
                "How do buffalo meat and cow beef differ?",
                "How are buffalo meat and cow beef similar?",
                Conflict::Polarity,
            ),
            (
                "What is the capital of the UK?",
                "What is the capital of the US?",
                Conflict::Entity,
            ),
            (
                "What is the best PDF to HTML converter?",
                "What is the best HTML to PDF converter?",
                Conflict::Order,
            ),
            (
                "Is Java faster than Python?",
                "Is Python faster than Java?",
                Conflict::Order,
            ),
        ];
        for (q, c, why) in refused {
            assert_eq!(check(q, c), Err(why), "{q:?} / {c:?}");
        }
    }

    #[test]
    fn paraphrases_pass() {
        let allowed = [
            (
                "What are some good tips for self study?",
                "What are the smart tips for self studying?",
            ),
            (
                "How can I improve my English?",
                "How do I improve my english?",
            ),
            (
                "Why is Donald Trump so popular?",
                "Why do people like Donald Trump?",
            ),
            (
                "How do I learn Python quickly?",
                "What is the fastest way to learn python?",
            ),
            (
                "I don't understand recursion.",
                "I do not understand recursion.",
            ),
            ("Which iPhone should I buy?", "Which iPhones should I buy?"),
            (
                "Which is better, Java or Python?",
                "Which is better, Python or Java?",
            ),
            (
                "How do I get from London to Paris?",
                "How do I get to Paris from London?",
            ),
            (
                "How do I convert PDF to HTML?",
                "What is the best way to convert PDF to HTML?",
            ),
        ];
        for (q, c) in allowed {
            assert_eq!(check(q, c), Ok(()), "{q:?} / {c:?}");
        }
    }

    #[test]
    fn numbers_are_normalized() {
        assert_eq!(
            check("It costs 1,000 dollars", "It costs 1000 dollars"),
            Ok(())
        );
        assert_eq!(check("the 3rd edition", "the third edition"), Ok(()));
        assert_eq!(
            check("the 2nd edition", "the third edition"),
            Err(Conflict::Number)
        );
        assert_eq!(check("What must one do?", "What must I do?"), Ok(()));
        assert_eq!(check("5k run", "5 k run"), Ok(()));
    }
}
