//! Convolution and pooling against straightforward reference loops, for every padding rule.

use burn::tensor::TensorData;
use retrain::layers::{
    AvgPool2d, Batch, Context, Conv2d, Conv2dConfig, Layer, MaxPool2d, Padding, PoolConfig,
};
use retrain::{default_device, Shape, Tensor};

/// Deterministic, irregular test values.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0
        })
        .collect()
}

struct Case {
    channels: usize,
    height: usize,
    width: usize,
    config: Conv2dConfig,
}

/// Direct convolution with explicit (top, left) padding; out-of-range reads are zero.
#[allow(clippy::too_many_arguments)]
fn reference_conv(
    x: &[f32],
    [_, h, w]: [usize; 3],
    kernel: &[f32],
    [o, cg, kh, kw]: [usize; 4],
    groups: usize,
    stride: usize,
    dilation: usize,
    (top, left): (usize, usize),
    [oh, ow]: [usize; 2],
) -> Vec<f32> {
    let mut out = vec![0.0; o * oh * ow];
    let per_group = o / groups;
    for oc in 0..o {
        let g = oc / per_group;
        for y in 0..oh {
            for xx in 0..ow {
                let mut acc = 0.0;
                for ic in 0..cg {
                    let cin = g * cg + ic;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (y * stride + ky * dilation) as isize - top as isize;
                            let ix = (xx * stride + kx * dilation) as isize - left as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            acc += x[cin * h * w + iy as usize * w + ix as usize]
                                * kernel[((oc * cg + ic) * kh + ky) * kw + kx];
                        }
                    }
                }
                out[(oc * oh + y) * ow + xx] = acc;
            }
        }
    }
    out
}

fn to_vec(batch: Batch) -> (Vec<usize>, Vec<f32>) {
    let dims = batch.dims();
    let t = batch.into_maps("test").unwrap();
    (
        dims,
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap(),
    )
}

#[test]
fn conv2d_matches_reference_for_each_padding_stride_dilation_and_grouping() {
    let device = default_device();
    let cases = [
        Case {
            channels: 2,
            height: 7,
            width: 6,
            config: Conv2dConfig::new(3, 3).bias(false),
        },
        // TF-SAME with stride 2 on an even size: padding (0, 1), the extra goes bottom/right.
        Case {
            channels: 2,
            height: 6,
            width: 8,
            config: Conv2dConfig::new(3, 3)
                .strides(2)
                .padding(Padding::Same)
                .bias(false),
        },
        Case {
            channels: 3,
            height: 7,
            width: 7,
            config: Conv2dConfig::new(2, 3)
                .strides(2)
                .padding(Padding::Same)
                .bias(false),
        },
        Case {
            channels: 2,
            height: 9,
            width: 8,
            config: Conv2dConfig::new(2, 3)
                .dilation(2)
                .padding(Padding::Same)
                .bias(false),
        },
        Case {
            channels: 2,
            height: 5,
            width: 5,
            config: Conv2dConfig::new(2, 3)
                .padding(Padding::Symmetric(1))
                .bias(false),
        },
        Case {
            channels: 4,
            height: 6,
            width: 5,
            config: Conv2dConfig::new(6, 3)
                .groups(2)
                .padding(Padding::Same)
                .bias(false),
        },
        Case {
            channels: 3,
            height: 8,
            width: 8,
            config: Conv2dConfig::depthwise(5)
                .strides(2)
                .padding(Padding::Same)
                .bias(false),
        },
    ];
    for (n, case) in cases.into_iter().enumerate() {
        let conv = Conv2d::from_config(None, case.config.clone());
        let input = Shape::image(Some(case.height), Some(case.width), case.channels);
        let out_shape = conv.build(input).unwrap();
        let kernel_var = conv.variables()[0].clone();
        let kdims: [usize; 4] = kernel_var.shape().try_into().unwrap();
        let kernel = values(kernel_var.numel(), 7 + n as u32);
        kernel_var.assign_data(kernel.clone(), &device);
        let x = values(case.channels * case.height * case.width, n as u32);
        let tensor = Tensor::<4>::from_data(
            TensorData::new(x.clone(), [1, case.channels, case.height, case.width]),
            &device,
        );
        let (dims, got) = to_vec(
            conv.forward(Batch::Maps(tensor), &mut Context::inference(&device))
                .unwrap(),
        );
        let Shape::Image {
            height: Some(oh),
            width: Some(ow),
            channels,
        } = out_shape
        else {
            panic!("case {n}: unknown output shape");
        };
        assert_eq!(
            dims,
            vec![1, channels, oh, ow],
            "case {n}: inferred and real shapes agree"
        );
        let c = &case.config;
        let top = c
            .padding
            .amounts(0, case.height, c.kernel[0], c.strides[0], c.dilation[0])
            .0;
        let left = c
            .padding
            .amounts(1, case.width, c.kernel[1], c.strides[1], c.dilation[1])
            .0;
        let groups = case.channels / kdims[1];
        let want = reference_conv(
            &x,
            [case.channels, case.height, case.width],
            &kernel,
            kdims,
            groups,
            c.strides[0],
            c.dilation[0],
            (top, left),
            [oh, ow],
        );
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "case {n}: max diff {diff}");
    }
}

#[test]
fn same_padding_is_asymmetric_like_tensorflow() {
    // Input 6, kernel 3, stride 2: output 3, total padding 1 -> (0 before, 1 after).
    assert_eq!(Padding::Same.amounts(0, 6, 3, 2, 1), (0, 1));
    // Input 7, kernel 3, stride 2: output 4, total padding 2 -> (1, 1).
    assert_eq!(Padding::Same.amounts(0, 7, 3, 2, 1), (1, 1));
    // Input 224, kernel 5, stride 2 (EfficientNet): (1, 2).
    assert_eq!(Padding::Same.amounts(0, 224, 5, 2, 1), (1, 2));
    assert_eq!(Padding::Valid.amounts(0, 10, 3, 1, 1), (0, 0));
}

#[test]
fn pooling_with_same_padding_ignores_padded_cells() {
    let device = default_device();
    // One 3x3 channel 1..9; 2x2 windows, stride 2, same padding: output 2x2.
    let x = Tensor::<4>::from_data(
        TensorData::new((1..=9).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 3, 3]),
        &device,
    );
    let config = PoolConfig {
        pool: [2, 2],
        strides: [2, 2],
        padding: Padding::Same,
    };
    let avg = AvgPool2d::from_config(None, config);
    let max = MaxPool2d::from_config(None, config);
    let ctx = &mut Context::inference(&device);
    let (dims, a) = to_vec(avg.forward(Batch::Maps(x.clone()), ctx).unwrap());
    assert_eq!(dims, vec![1, 1, 2, 2]);
    assert_eq!(a, vec![3.0, 4.5, 7.5, 9.0]);
    let (_, m) = to_vec(max.forward(Batch::Maps(x), ctx).unwrap());
    assert_eq!(m, vec![5.0, 6.0, 8.0, 9.0]);
}

/// Max pooling with gradients (a fine-tuned block ending in a pool, VGG16's block5): the
/// layer runs on autodiff tensors, and the gradient reaches each window's maximum only.
#[test]
fn max_pooling_passes_gradients_to_the_maxima() {
    let device = default_device().autodiff();
    let x = Tensor::<4>::from_data(
        TensorData::new(values(2 * 3 * 6 * 7, 5), [2, 3, 6, 7]),
        &device,
    )
    .require_grad();
    let pool = MaxPool2d::from_config(None, PoolConfig::new(2));
    let ctx = &mut Context::training(&device, true);
    let Batch::Maps(y) = pool.forward(Batch::Maps(x.clone()), ctx).unwrap() else {
        panic!("max pooling gives maps");
    };
    assert_eq!(y.dims(), [2, 3, 3, 3]);
    let grads = y.clone().sum().backward();
    let (_, grad) = to_vec(Batch::Maps(
        x.grad(&grads).expect("a gradient for the input"),
    ));
    let (_, input) = to_vec(Batch::Maps(x.clone().inner()));
    let (_, pooled) = to_vec(Batch::Maps(y.inner()));
    // One 1 per window (at its maximum; these values have no ties), zeros elsewhere,
    // including the 7th column, which no window covers.
    assert_eq!(grad.iter().filter(|&&g| g == 1.0).count(), pooled.len());
    assert_eq!(
        grad.iter().filter(|&&g| g == 0.0).count(),
        input.len() - pooled.len()
    );
    let picked: f32 = input.iter().zip(&grad).map(|(v, g)| v * g).sum();
    assert!((picked - pooled.iter().sum::<f32>()).abs() < 1e-3);
}

/// Inference with the batch split across threads gives each image what running the whole batch
/// through the layers gives it (MobileNetV2: depthwise and 1x1 convolutions with BatchNorm
/// folded, residual adds).
#[test]
fn batch_split_inference_equals_whole_batch() {
    use retrain::layers::{Batch, Context, Precision};
    use retrain::train::features::{inference_layers, run_inference, run_layers};
    use retrain::zoo::{self, Pooling, ZooOptions};

    let device = default_device();
    let entry = zoo::entry("mobilenet_v2_035").unwrap();
    let model = (entry.build)(&ZooOptions {
        include_top: false,
        input: Some([32, 32]),
        pooling: Pooling::Avg,
        ..ZooOptions::default()
    })
    .unwrap();
    model.initialize(7, &device);
    let layers = inference_layers(&model, &device).unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(values(5 * 3 * 32 * 32, 3), [5, 3, 32, 32]),
        &device,
    );
    let host = |b: Batch| {
        let dims = b.dims();
        let Batch::Vectors(t) = b else {
            panic!("pooled vectors expected, got {dims:?}")
        };
        (
            dims,
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap(),
        )
    };
    let (dims, whole) = host(
        run_layers(
            &layers,
            Batch::Maps(x.clone()),
            &mut Context::inference(&device),
        )
        .unwrap(),
    );
    let (split_dims, split) =
        host(run_inference(&layers, Batch::Maps(x), &device, Precision::F32).unwrap());
    assert_eq!(dims, vec![5, 1280]);
    assert_eq!(split_dims, dims);
    let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = whole
        .iter()
        .zip(&split)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0, "degenerate features");
    assert!(
        diff <= 1e-5 * scale,
        "split differs by {diff:e} (max {scale:e})"
    );
    // The images differ, so a split that mixed them up would show.
    assert!(whole[..1280] != whole[1280..2560]);
}
