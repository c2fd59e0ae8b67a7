//! The fused SGD update of libtorch (`at::_fused_sgd_`, behind `torch.optim.SGD(fused=True)`): every
//! parameter updated in one pass over its memory, without the temporaries of the update written op by op.

use std::ffi::{c_char, c_int, c_void};

use tch::Tensor;

use crate::dist::DistError;

extern "C" {
    fn wrn_fused_sgd(
        params: *mut *mut c_void,
        grads: *mut *mut c_void,
        buffers: *mut *mut c_void,
        n: usize,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        dampening: f64,
        nesterov: c_int,
        first_step: c_int,
    ) -> *mut c_char;
}

/// The hyper-parameters of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// The momentum buffers start as this step's update (`buf = d`) instead of being read.
    pub first_step: bool,
}

/// Updates `params` in place from `grads` (and `buffers`, one per parameter, unless momentum is 0):
/// `d = g + wd·p`; `buf = d` on the first step, else `momentum·buf + (1 − dampening)·d`; with Nesterov
/// `d = d + momentum·buf`, else `d = buf`; `p = p − lr·d`. Each parameter, its gradient and its buffer
/// must share shape, strides, dtype and device.
pub fn fused_sgd(params: &[Tensor], grads: &[Tensor], buffers: &[Tensor], step: SgdStep) -> Result<(), DistError> {
    let n = params.len();
    if grads.len() != n || (step.momentum != 0.0 && buffers.len() != n) {
        return Err(DistError(format!(
            "fused SGD over {n} parameters got {} gradients and {} momentum buffers",
            grads.len(),
            buffers.len()
        )));
    }
    let pointers = |ts: &[Tensor]| ts.iter().map(|t| t.as_ptr() as *mut c_void).collect::<Vec<_>>();
    let (mut p, mut g, mut b) = (pointers(params), pointers(grads), pointers(buffers));
    // SAFETY: each pointer is a live at::Tensor owned by the slices, which outlive the call; the lengths
    // were checked above.
    crate::dist::check(unsafe {
        wrn_fused_sgd(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            b.as_mut_ptr(),
            n,
            step.weight_decay,
            step.momentum,
            step.lr,
            step.dampening,
            c_int::from(step.nesterov),
            c_int::from(step.first_step),
        )
    })
}
