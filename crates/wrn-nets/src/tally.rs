//! Layer-by-layer accounting done while a network is built: parameters, forward multiply-adds and
//! activation memory per image, grouped by stage. `wrn model summary` prints it.
//!
//! Conventions: multiply-adds count convolutions and linear layers (one per weight use; BN, ReLU, pooling
//! and additions are not counted), the usual convention behind "WRN-28-10 costs 5.24 G". Activation memory
//! counts the fp32 outputs of every conv, BN, ReLU, addition and pooling layer for one image: what a
//! training step keeps for the backward pass.

use serde::Serialize;

/// Totals of one stage (stem, each group of blocks, head).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageStats {
    pub name: String,
    /// Output shape of the stage for one image: channels, height, width.
    pub output: [i64; 3],
    pub parameters: i64,
    pub mult_adds: i64,
    pub activation_bytes: i64,
}

/// Accumulates [`StageStats`] while layers are added; tracks the running activation shape.
#[derive(Debug, Clone)]
pub struct Tally {
    stages: Vec<StageStats>,
    shape: [i64; 3],
}

impl Tally {
    /// Starts from an input of `channels × height × width`.
    pub fn new(channels: i64, height: i64, width: i64) -> Tally {
        Tally { stages: Vec::new(), shape: [channels, height, width] }
    }

    /// Starts a new stage; later layers are counted in it.
    pub fn stage(&mut self, name: impl Into<String>) {
        self.stages.push(StageStats { name: name.into(), output: self.shape, ..Default::default() });
    }

    fn current(&mut self) -> &mut StageStats {
        if self.stages.is_empty() {
            self.stage("input");
        }
        self.stages.last_mut().unwrap()
    }

    /// The activation shape after the layers counted so far.
    pub fn shape(&self) -> [i64; 3] {
        self.shape
    }

    /// Sets the running shape (e.g. to return to a block's input for its shortcut).
    pub fn set_shape(&mut self, shape: [i64; 3]) {
        self.shape = shape;
    }

    fn output(&mut self, shape: [i64; 3]) {
        self.shape = shape;
        let elements = shape.iter().product::<i64>();
        let stage = self.current();
        stage.output = shape;
        stage.activation_bytes += 4 * elements;
    }

    /// A k×k convolution without bias, with `padding`, from the running shape.
    pub fn conv(&mut self, c_out: i64, k: i64, stride: i64, padding: i64) {
        let [c_in, h, w] = self.shape;
        let (h_out, w_out) = ((h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1);
        let stage = self.current();
        stage.parameters += c_in * c_out * k * k;
        stage.mult_adds += c_in * c_out * k * k * h_out * w_out;
        self.output([c_out, h_out, w_out]);
    }

    /// Batch normalisation (γ and β are parameters; running statistics are not).
    pub fn batch_norm(&mut self) {
        let shape = self.shape;
        self.current().parameters += 2 * shape[0];
        self.output(shape);
    }

    /// An element-wise layer that keeps its output (ReLU, dropout, residual addition).
    pub fn elementwise(&mut self) {
        let shape = self.shape;
        self.output(shape);
    }

    /// A pooling layer with output size `h × w`.
    pub fn pool(&mut self, h: i64, w: i64) {
        let c = self.shape[0];
        self.output([c, h, w]);
    }

    /// A linear layer with bias, from the flattened running shape.
    pub fn linear(&mut self, out: i64) {
        let inputs = self.shape.iter().product::<i64>();
        let stage = self.current();
        stage.parameters += inputs * out + out;
        stage.mult_adds += inputs * out;
        self.output([out, 1, 1]);
    }

    pub fn stages(&self) -> &[StageStats] {
        &self.stages
    }

    /// Totals over all stages.
    pub fn total(&self) -> StageStats {
        let mut total = StageStats { name: "total".into(), output: self.shape, ..Default::default() };
        for s in &self.stages {
            total.parameters += s.parameters;
            total.mult_adds += s.mult_adds;
            total.activation_bytes += s.activation_bytes;
        }
        total
    }
}
