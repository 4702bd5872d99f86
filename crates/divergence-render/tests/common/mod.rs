//! Values shared by the renderers' tests: deterministic activations and a perturbed copy.

/// A deterministic "activation": values of moderate size, no zeros.
pub fn act(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * 0.37 + seed as f32 * 1.3).sin() * 2.0 + 0.1)
        .collect()
}

/// ours = ref * (1 + eps) element-wise pattern.
pub fn perturb(r: &[f32], eps: f32) -> Vec<f32> {
    r.iter()
        .enumerate()
        .map(|(i, x)| x * (1.0 + eps * (((i % 5) as f32) - 2.0) / 2.0))
        .collect()
}
