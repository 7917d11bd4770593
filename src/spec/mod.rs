//! The release spec: model, schema validation with locations, semantic checks, loading from a
//! git tree.
//!
//! Loading is: YAML text → JSON value (serde-saphyr, strict) → JSON Schema check
//! (`schemas/release.schema.json`) → typed [`model::ReleaseSpec`] → semantic checks. Every error
//! names the file, line:column, the path inside the document, what is wrong and how to fix it,
//! and all errors are reported at once.

pub mod model;

use std::fmt;

pub use model::ReleaseSpec;

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// As the operator knows it: the path in the repo (`release.yaml`, `deploy/release.yaml`) or
    /// on disk.
    pub file: String,
    /// 1-based; 0 when the problem has no place in the text (an empty document).
    pub line: usize,
    pub column: usize,
    /// Dotted path inside the document (`services.api.health.http.port`); empty for the root.
    pub path: String,
    pub message: String,
    /// How to fix it, when we can say.
    pub fix: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

/// All the problems found in one spec, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} error{} in the release spec:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}
