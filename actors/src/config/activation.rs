//! The MLP activation named by `hidden_act`, as transformers' `ACT2FN` computes it, written with
//! candle ops that have a backward pass.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// An activation function transformers knows by one or more `hidden_act` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `silu`, `swish`: x * sigmoid(x).
    Silu,
    /// `gelu`, `gelu_python`: x * Phi(x) with the exact normal CDF (erf).
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_python_tanh`, `gelu_fast`, `gelu_accurate`: the
    /// tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    GeluTanh,
    /// `quick_gelu`: x * sigmoid(1.702 x).
    QuickGelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The activation for a `hidden_act` name, or None for one not implemented here.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" | "gelu_python" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_python_tanh" | "gelu_fast"
            | "gelu_accurate" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }

    /// The name written to `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluErf => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
            Activation::QuickGelu => "quick_gelu",
            Activation::Relu => "relu",
        }
    }

    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Silu => x.silu(),
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::QuickGelu => {
                let sigmoid = ((x * -1.702)?.exp()? + 1.0)?.recip()?;
                x * sigmoid
            }
            Activation::Relu => x.relu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn values_match_the_definitions() {
        let x = Tensor::new(&[-1.5_f64, 0.3, 2.0], &Device::Cpu).unwrap();
        let at = |activation: Activation| activation.apply(&x).unwrap().to_vec1::<f64>().unwrap();
        let xs = [-1.5_f64, 0.3, 2.0];
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        for (got, v) in at(Activation::Silu).iter().zip(xs) {
            assert!((got - v * sigmoid(v)).abs() < 1e-12);
        }
        for (got, v) in at(Activation::QuickGelu).iter().zip(xs) {
            assert!((got - v * sigmoid(1.702 * v)).abs() < 1e-12);
        }
        let tanh_form = |v: f64| {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        };
        for (got, v) in at(Activation::GeluTanh).iter().zip(xs) {
            assert!((got - tanh_form(v)).abs() < 1e-9);
        }
        // Phi(-1.5) = 0.0668072, Phi(2) = 0.9772499.
        let erf = at(Activation::GeluErf);
        assert!((erf[0] - (-1.5 * 0.066_807_2)).abs() < 1e-6);
        assert!((erf[2] - 2.0 * 0.977_249_9).abs() < 1e-6);
        assert_eq!(at(Activation::Relu), vec![0.0, 0.3, 2.0]);
        assert_eq!(Activation::from_name("relu2"), None);
        assert_eq!(Activation::from_name("swish"), Some(Activation::Silu));
    }
}
