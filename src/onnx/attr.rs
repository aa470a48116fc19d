//! Typed attribute getters on `NodeProto`; errors name the node, op and attribute.
use super::proto::{AttributeProto, NodeProto, TensorProto};
use crate::error::{Error, Result};

pub trait NodeExt {
    fn attr(&self, name: &str) -> Option<&AttributeProto>;
    fn attr_err(&self, attr: &str, reason: impl Into<String>) -> Error;
    fn node_err(&self, reason: impl Into<String>) -> Error;
    /// A label for messages: the node's name, or `op_type#outputs` when unnamed.
    fn label(&self) -> String;

    fn get_i(&self, name: &str) -> Result<Option<i64>> {
        self.attr(name).map(|a| self.check(a, 2, "an int").map(|_| a.i())).transpose()
    }
    fn get_f(&self, name: &str) -> Result<Option<f32>> {
        self.attr(name).map(|a| self.check(a, 1, "a float").map(|_| a.f())).transpose()
    }
    fn get_s(&self, name: &str) -> Result<Option<String>> {
        self.attr(name)
            .map(|a| self.check(a, 3, "a string").map(|_| String::from_utf8_lossy(a.s()).into_owned()))
            .transpose()
    }
    fn get_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        self.attr(name).map(|a| self.check(a, 7, "a list of ints").map(|_| a.ints.clone())).transpose()
    }
    fn get_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        self.attr(name).map(|a| self.check(a, 6, "a list of floats").map(|_| a.floats.clone())).transpose()
    }
    fn get_strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        self.attr(name)
            .map(|a| {
                self.check(a, 8, "a list of strings")
                    .map(|_| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
            })
            .transpose()
    }
    fn get_t(&self, name: &str) -> Result<Option<&TensorProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.check(a, 4, "a tensor")?;
                Ok(a.t.as_ref())
            }
        }
    }

    /// Accepts the declared type, or an untyped (type 0) attribute from old exporters.
    fn check(&self, a: &AttributeProto, want: i32, what: &str) -> Result<()> {
        let ty = a.r#type.unwrap_or(0);
        if ty == want || ty == 0 {
            Ok(())
        } else {
            Err(self.attr_err(a.name(), format!("expected {what}, found attribute type {ty}")))
        }
    }

    fn req_i(&self, name: &str) -> Result<i64> {
        self.get_i(name)?.ok_or_else(|| self.attr_err(name, "required attribute is missing"))
    }
    fn req_ints(&self, name: &str) -> Result<Vec<i64>> {
        self.get_ints(name)?.ok_or_else(|| self.attr_err(name, "required attribute is missing"))
    }
}

impl NodeExt for NodeProto {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name() == name)
    }
    fn attr_err(&self, attr: &str, reason: impl Into<String>) -> Error {
        Error::Attr {
            node: self.label(),
            op: self.op_type().to_string(),
            attr: attr.to_string(),
            reason: reason.into(),
        }
    }
    fn node_err(&self, reason: impl Into<String>) -> Error {
        Error::Node { node: self.label(), op: self.op_type().to_string(), reason: reason.into() }
    }
    fn label(&self) -> String {
        if !self.name().is_empty() {
            self.name().to_string()
        } else {
            format!("{}#{}", self.op_type(), self.output.join(","))
        }
    }
}
