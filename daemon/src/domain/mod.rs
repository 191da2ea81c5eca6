//! The domain model: XML documents to typed definitions and back.

pub mod xml;
