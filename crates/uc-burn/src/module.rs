//! Burn modules ⇄ named flat tensors: parameter names are the module paths (`blocks.0.qkv.weight`).

use crate::error::{BurnError, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use std::collections::BTreeMap;

/// One parameter of a module: its path name, shape and flat values.
pub struct NamedParam<B: Backend> {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Tensor<B, 1>,
}

struct Collect<B: Backend> {
    path: Vec<String>,
    out: Vec<NamedParam<B>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        self.out.push(NamedParam {
            name: self.path.join("."),
            shape,
            value: t.flatten(0, D - 1),
        });
    }
}

/// Every float parameter of `module` with its path name, in visiting order.
pub fn named_params<B: Backend, M: Module<B>>(module: &M) -> Vec<NamedParam<B>> {
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

struct Assign<'a, B: Backend> {
    path: Vec<String>,
    values: &'a BTreeMap<String, Tensor<B, 1>>,
    errors: Vec<BurnError>,
}

impl<B: Backend> ModuleMapper<B> for Assign<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let name = self.path.join(".");
        let Some(v) = self.values.get(&name) else {
            self.errors.push(BurnError::Missing {
                tensor: name,
                role: "param".into(),
                why: "no value to assign".into(),
            });
            return Param::from_mapped_value(id, t, mapper);
        };
        let shape = t.shape();
        if v.dims()[0] != shape.num_elements() {
            self.errors.push(BurnError::Data {
                tensor: name,
                why: format!("{} elements for shape {:?}", v.dims()[0], t.dims()),
            });
            return Param::from_mapped_value(id, t, mapper);
        }
        let grad = t.is_require_grad();
        let mut new: Tensor<B, D> = v.clone().reshape(shape).to_device(&t.device());
        if grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Replaces every float parameter of `module` by the flat value of the same name (reshaped to the
/// parameter's shape, moved to its device); a missing or mis-sized value is an error.
pub fn assign_params<B: Backend, M: Module<B>>(
    module: M,
    values: &BTreeMap<String, Tensor<B, 1>>,
) -> Result<M> {
    let mut a = Assign {
        path: Vec::new(),
        values,
        errors: Vec::new(),
    };
    let m = module.map(&mut a);
    match a.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(m),
    }
}
