//! The computation of one training step, shared by the trainer's eager steps, the steps it replays from
//! a CUDA graph and the parity checks: the forward pass in the network's precision, the loss in f32, the
//! backward pass and the SGD update.

use std::convert::Infallible;

use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::sgd::Sgd;

/// Logits in f32, where the loss and the error counts are computed whatever the precision.
pub fn f32_logits(logits: Tensor) -> Tensor {
    if logits.kind() == Kind::Float {
        logits
    } else {
        logits.to_kind(Kind::Float)
    }
}

/// Forward pass on `(x, y)`, the backward pass from the batch's mean loss through `backward`, and SGD at
/// `lr`. Returns the mean loss and the correct predictions (f64), on the device.
pub fn sgd_step<E>(
    (net, sgd): (&wrn_nets::Network, &mut Sgd),
    lr: f64,
    (x, y): (&Tensor, &Tensor),
    backward: impl FnOnce(&Tensor) -> Result<(), E>,
) -> Result<(Tensor, Tensor), E> {
    sgd.zero_grad();
    let logits = f32_logits(net.forward_t(x, true));
    let loss = logits.cross_entropy_for_logits(y);
    backward(&loss)?;
    sgd.step(lr);
    let correct = tch::no_grad(|| logits.argmax(-1, false).eq_tensor(y).sum(Kind::Double));
    Ok((loss.detach(), correct))
}

/// [`sgd_step`] of one process: the backward pass straight from the loss.
pub fn local_sgd_step(
    (net, sgd): (&wrn_nets::Network, &mut Sgd),
    lr: f64,
    (x, y): (&Tensor, &Tensor),
) -> (Tensor, Tensor) {
    let Ok(out) = sgd_step((net, sgd), lr, (x, y), |loss| {
        loss.backward();
        Ok::<(), Infallible>(())
    });
    out
}
