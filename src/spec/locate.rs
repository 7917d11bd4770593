//! Where each value of a YAML document is written, by dotted path.
//!
//! serde-saphyr gives us values but not positions, so a second, cheap pass over saphyr-parser's
//! events records the line:column of every mapping key (and of every list item) under its dotted
//! path: `services.api.health.http.port`, `services.api.ports.0`. The same pass finds duplicate
//! keys with their path, which lets the duplicate-key error name the place precisely.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser};

/// Line and column (1-based) of every path in one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    map: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// The line and column of `path`, or of its nearest ancestor that is written in the document
    /// (a missing key is reported where its parent is). `(1, 1)` for an empty document.
    pub fn of(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(&loc) = self.map.get(p) {
                return loc;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None if !p.is_empty() => p = "",
                None => return (1, 1),
            }
        }
    }

    /// Whether `path` is written in the document.
    pub fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    /// The path written closest before `(line, col)`: used to give a YAML syntax error, which
    /// only has a position, a path too.
    pub fn path_before(&self, line: usize, col: usize) -> String {
        self.map
            .iter()
            .filter(|(_, &at)| at <= (line, col))
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.len().cmp(&b.0.len())))
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub path: String,
    pub line: usize,
    pub column: usize,
    /// Where the first one is.
    pub first: (usize, usize),
}

/// A YAML syntax error as the event parser saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What one pass over the events found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub locations: Locations,
    pub duplicates: Vec<Duplicate>,
    pub syntax: Option<SyntaxError>,
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while waiting for a key.
        key: Option<String>,
        seen: HashMap<String, (usize, usize)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

fn pos(m: &Marker) -> (usize, usize) {
    // saphyr-parser lines are 1-based, columns 0-based.
    (m.line(), m.col() + 1)
}

/// Scans `text`; stops at the first syntax error, keeping what it indexed before it.
pub fn scan(text: &str) -> Scan {
    let mut out = Scan::default();
    let mut stack: Vec<Frame> = Vec::new();
    // Only the first document is the spec; serde-saphyr reports any further ones.
    let mut first_done = false;
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let (line, column) = pos(e.marker());
                out.syntax = Some(SyntaxError {
                    line,
                    column,
                    message: e.info().to_string(),
                });
                break;
            }
        };
        if first_done {
            continue;
        }
        let at = pos(&span.start);
        match event {
            Event::DocumentEnd => first_done = true,
            Event::Scalar(value, ..) => {
                if !take_key_slot(&mut stack, &value, at, &mut out) {
                    place_node(&mut stack, at, &mut out.locations);
                }
            }
            Event::Alias(_) => {
                place_node(&mut stack, at, &mut out.locations);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                // A collection used as a mapping key (rare, `? [a, b]: x`) gets a placeholder key.
                if let Some(Frame::Map { key: k @ None, .. }) = stack.last_mut() {
                    *k = Some("?".to_string());
                }
                let path = place_node(&mut stack, at, &mut out.locations);
                stack.push(if is_map {
                    Frame::Map {
                        path,
                        key: None,
                        seen: HashMap::new(),
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::DocumentStart(_) | Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
    out
}

/// If the innermost frame is a mapping waiting for a key, `value` is that key: record it.
fn take_key_slot(stack: &mut [Frame], value: &str, at: (usize, usize), out: &mut Scan) -> bool {
    if let Some(Frame::Map { path, key, seen }) = stack.last_mut() {
        if key.is_none() {
            let full = join(path, value);
            if let Some(&first) = seen.get(value) {
                out.duplicates.push(Duplicate {
                    path: full.clone(),
                    line: at.0,
                    column: at.1,
                    first,
                });
            } else {
                seen.insert(value.to_string(), at);
                out.locations.map.insert(full, at);
            }
            *key = Some(value.to_string());
            return true;
        }
    }
    false
}

/// A value node starts at `at`: returns its path, records list items' positions, and moves the
/// enclosing collection on to its next key or item.
fn place_node(stack: &mut [Frame], at: (usize, usize), locations: &mut Locations) -> String {
    match stack.last_mut() {
        None => {
            locations.map.entry(String::new()).or_insert(at);
            String::new()
        }
        Some(Frame::Map { path, key, .. }) => {
            let k = key.take().unwrap_or_default();
            join(path, &k)
        }
        Some(Frame::Seq { path, next }) => {
            let p = join(path, &next.to_string());
            *next += 1;
            locations.map.entry(p.clone()).or_insert(at);
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1\nservices:\n  api:\n    ports: [\"80:80\", \"81:81\"]\n    health:\n      http: { port: 8000 }\n    volumes:\n      - a:/a\n      - b:/b\n";

    #[test]
    fn keys_and_list_items_have_positions() {
        let s = scan(DOC);
        assert!(s.syntax.is_none());
        let l = &s.locations;
        assert_eq!(l.of("version"), (1, 1));
        assert_eq!(l.of("services.api"), (3, 3));
        assert_eq!(l.of("services.api.ports.1"), (4, 22));
        assert_eq!(l.of("services.api.health.http.port"), (6, 15));
        assert_eq!(l.of("services.api.volumes.1"), (9, 9));
    }

    #[test]
    fn absent_paths_fall_back_to_the_nearest_ancestor() {
        let l = scan(DOC).locations;
        assert_eq!(l.of("services.api.health.tcp.port"), (5, 5));
        assert_eq!(l.of("nothing.here"), (1, 1));
    }

    #[test]
    fn duplicates_are_found_with_their_path() {
        let s = scan("services:\n  api:\n    image: a\n    image: b\n");
        assert_eq!(s.duplicates.len(), 1);
        assert_eq!(s.duplicates[0].path, "services.api.image");
        assert_eq!((s.duplicates[0].line, s.duplicates[0].first.0), (4, 3));
    }

    #[test]
    fn syntax_errors_keep_the_parser_position() {
        let s = scan("services:\n  api: [a, b\n  db: x\n");
        let e = s.syntax.expect("a syntax error");
        assert!(e.line >= 2, "{e:?}");
    }

    #[test]
    fn path_before_finds_the_enclosing_key() {
        let l = scan(DOC).locations;
        assert_eq!(l.path_before(6, 20), "services.api.health.http.port");
    }
}
