//! STUB, replaced by branch wip-proxy (archive upload/download through the engine).

use super::{Engine, EngineError};

impl Engine {
    pub async fn read_file(
        &self,
        _container: &str,
        _path: &str,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(None)
    }
}
