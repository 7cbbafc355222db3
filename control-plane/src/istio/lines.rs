//! Where each field of a YAML document is: a map from field path
//! (`spec.http[0].route[1].weight`) to its 1-based line, so that errors found
//! after parsing can still name the line.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field paths of one document and their lines.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text` (one YAML document). Lines are offset by `first_line - 1`.
    pub fn build(text: &str, first_line: usize) -> Self {
        let mut recv =
            Receiver { stack: Vec::new(), index: LineIndex::default(), offset: first_line.saturating_sub(1) };
        let _ = Parser::new_from_str(text).load(&mut recv, false);
        recv.index
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

struct Receiver {
    stack: Vec<Frame>,
    index: LineIndex,
    offset: usize,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Receiver {
    /// The path of the value node that starts now, consuming the parent's slot.
    fn value_path(&mut self) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => join(path, &key.take().unwrap_or_default()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                p
            }
        }
    }

    fn record(&mut self, path: &str, mark: &Marker) {
        self.index.lines.entry(path.to_string()).or_insert(mark.line() + self.offset);
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // A scalar where a map expects a key is the key.
        if let (Event::Scalar(text, ..), Some(Frame::Map { path, key: key @ None })) = (&ev, self.stack.last_mut()) {
            let p = join(path, text);
            *key = Some(text.clone());
            self.record(&p, &mark);
            return;
        }
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                let p = self.value_path();
                self.record(&p, &mark);
            }
            Event::MappingStart(..) => {
                let p = self.value_path();
                self.record(&p, &mark);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.value_path();
                self.record(&p, &mark);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_paths() {
        let text = "kind: X\nspec:\n  http:\n  - match:\n    - uri: {prefix: /a}\n    route:\n    - destination: {host: a}\n      weight: 10\n";
        let idx = LineIndex::build(text, 1);
        assert_eq!(idx.line("kind"), Some(1));
        assert_eq!(idx.line("spec.http[0].match[0].uri.prefix"), Some(5));
        assert_eq!(idx.line("spec.http[0].route[0].weight"), Some(8));
        assert_eq!(idx.line("spec.http[0].route[0].destination.host"), Some(7));
        assert_eq!(idx.line("spec.http[0].route[0].nope.deeper"), Some(7), "nearest ancestor");
        let idx = LineIndex::build(text, 11);
        assert_eq!(idx.line("kind"), Some(11));
    }
}
