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

    /// A plain-text table: one line per stage, then the total.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<8} {:>16} {:>14} {:>16} {:>14}\n",
            "stage", "output (C×H×W)", "parameters", "mult-adds", "activations"
        );
        for s in self.stages.iter().chain(std::iter::once(&self.total())) {
            let [c, h, w] = s.output;
            out += &format!(
                "{:<8} {:>16} {:>14} {:>16} {:>14}\n",
                s.name,
                format!("{c}×{h}×{w}"),
                group_digits(s.parameters),
                group_digits(s.mult_adds),
                format!("{:.2} MiB", s.activation_bytes as f64 / (1u64 << 20) as f64)
            );
        }
        out
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

/// `1234567` as `1,234,567`.
pub fn group_digits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conv_stage_is_counted_by_hand() {
        let mut t = Tally::new(3, 32, 32);
        t.stage("stem");
        t.conv(16, 3, 1, 1);
        t.batch_norm();
        t.stage("down");
        t.conv(32, 3, 2, 1);
        t.pool(1, 1);
        t.linear(10);
        let s = t.stages();
        assert_eq!((s[0].parameters, s[0].mult_adds), (3 * 16 * 9 + 32, 3 * 16 * 9 * 32 * 32));
        assert_eq!(s[0].activation_bytes, 2 * 4 * 16 * 32 * 32);
        assert_eq!(s[1].output, [10, 1, 1]);
        assert_eq!(s[1].mult_adds, 16 * 32 * 9 * 16 * 16 + 32 * 10);
        assert_eq!(t.total().parameters, s[0].parameters + 16 * 32 * 9 + 32 * 10 + 10);
        assert!(t.render().lines().last().unwrap().starts_with("total"));
        assert_eq!(group_digits(36_479_194), "36,479,194");
        assert_eq!(group_digits(-1000), "-1,000");
        assert_eq!(group_digits(999), "999");
    }
}
