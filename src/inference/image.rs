//! Model output → images: decoding model space to heights, the final 16-bit grayscale PNG, and
//! small 8-bit previews for progress.

use super::catalog::Decode;

/// Model-space values → output values (e.g. heights in metres), per the manifest's decoder.
pub fn decode(values: &[f32], decode: &Decode) -> Vec<f32> {
    match *decode {
        Decode::Linear => values.to_vec(),
        Decode::Asinh {
            asinh_scale,
            height_range,
            zero_floor,
        } => {
            let normalizer = (height_range / asinh_scale).asinh();
            let mut heights: Vec<f32> = values
                .iter()
                .map(|&v| {
                    let unit = ((v + 1.0) * 0.5).clamp(0.0, 1.0);
                    (asinh_scale * (unit * normalizer).sinh()).clamp(0.0, height_range)
                })
                .collect();
            if zero_floor {
                let min = heights.iter().copied().fold(f32::INFINITY, f32::min);
                if min.is_finite() {
                    heights.iter_mut().for_each(|h| *h -= min);
                }
            }
            heights
        }
    }
}

/// The finite minimum and maximum of `values` (`(0, 0)` when there is none).
pub fn range(values: &[f32]) -> (f32, f32) {
    let (min, max) = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if min.is_finite() {
        (min, max)
    } else {
        (0.0, 0.0)
    }
}

/// `values` normalised to `0..=1` over their own range (a flat image is all 0; NaN is 0).
fn normalised(values: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let (min, max) = range(values);
    let span = max - min;
    values.iter().map(move |&v| {
        if span > 0.0 && v.is_finite() {
            ((v - min) / span).clamp(0.0, 1.0)
        } else {
            0.0
        }
    })
}

/// A 16-bit grayscale PNG of `values` (`height × width`, row-major), min–max normalised. The
/// value range is recorded in the `value_min` / `value_max` text chunks (with `unit` when given),
/// so heights can be recovered: `v = value_min + gray / 65535 · (value_max − value_min)`.
pub fn heightmap_png(
    values: &[f32],
    width: u32,
    height: u32,
    unit: Option<&str>,
) -> Result<Vec<u8>, String> {
    check_len(values, width, height)?;
    let (min, max) = range(values);
    let mut data = Vec::with_capacity(values.len() * 2);
    for v in normalised(values) {
        data.extend_from_slice(&((v * 65535.0).round() as u16).to_be_bytes());
    }
    let mut text = vec![
        ("value_min".to_string(), format!("{min}")),
        ("value_max".to_string(), format!("{max}")),
    ];
    if let Some(unit) = unit {
        text.push(("unit".to_string(), unit.to_string()));
    }
    encode_gray(&data, width, height, png::BitDepth::Sixteen, &text)
}

/// An 8-bit grayscale preview no larger than `max_side` on either side (box-filtered), min–max
/// normalised.
pub fn preview_png(
    values: &[f32],
    width: u32,
    height: u32,
    max_side: u32,
) -> Result<Vec<u8>, String> {
    check_len(values, width, height)?;
    let max_side = max_side.max(1);
    let factor = width.max(height).div_ceil(max_side).max(1);
    let (pw, ph) = (width.div_ceil(factor), height.div_ceil(factor));
    let norm: Vec<f32> = normalised(values).collect();
    let (w, h, f) = (width as usize, height as usize, factor as usize);
    let mut data = Vec::with_capacity((pw * ph) as usize);
    for py in 0..ph as usize {
        for px in 0..pw as usize {
            let (mut sum, mut n) = (0.0f32, 0u32);
            for y in py * f..((py + 1) * f).min(h) {
                for x in px * f..((px + 1) * f).min(w) {
                    sum += norm.get(y * w + x).copied().unwrap_or(0.0);
                    n += 1;
                }
            }
            let v = if n > 0 { sum / n as f32 } else { 0.0 };
            data.push((v * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    encode_gray(&data, pw, ph, png::BitDepth::Eight, &[])
}

/// An 8-bit RGB (or RGBA) PNG of interleaved `bytes`.
pub fn rgb_png(bytes: &[u8], width: u32, height: u32, alpha: bool) -> Result<Vec<u8>, String> {
    let channels = if alpha { 4 } else { 3 };
    if bytes.len() != width as usize * height as usize * channels {
        return Err(format!("an RGB image of {width}x{height} needs more bytes"));
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(if alpha {
            png::ColorType::Rgba
        } else {
            png::ColorType::Rgb
        });
        encoder.set_depth(png::BitDepth::Eight);
        // Fast deflate: node outputs are made on every run; size matters less than time.
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder
            .write_header()
            .map_err(|e| format!("PNG header: {e}"))?;
        writer
            .write_image_data(bytes)
            .map_err(|e| format!("PNG data: {e}"))?;
        writer.finish().map_err(|e| format!("PNG: {e}"))?;
    }
    Ok(out)
}

/// Heights in the model's space (the inverse of [`decode`]), for image-to-image: heights are
/// clamped to the decoder's range first.
pub fn encode(values: &[f32], decode: &Decode) -> Vec<f32> {
    match *decode {
        Decode::Linear => values.to_vec(),
        Decode::Asinh {
            asinh_scale,
            height_range,
            ..
        } => {
            let normalizer = (height_range / asinh_scale).asinh();
            values
                .iter()
                .map(|&h| {
                    let h = if h.is_finite() {
                        h.clamp(0.0, height_range)
                    } else {
                        0.0
                    };
                    (h / asinh_scale).asinh() / normalizer * 2.0 - 1.0
                })
                .collect()
        }
    }
}

fn check_len(values: &[f32], width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 || values.len() != width as usize * height as usize {
        return Err(format!(
            "an image of {width}x{height} needs {} values, got {}",
            width as usize * height as usize,
            values.len()
        ));
    }
    Ok(())
}

fn encode_gray(
    data: &[u8],
    width: u32,
    height: u32,
    depth: png::BitDepth,
    text: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(depth);
        encoder.set_compression(png::Compression::Fast);
        for (k, v) in text {
            encoder
                .add_text_chunk(k.clone(), v.clone())
                .map_err(|e| format!("PNG text chunk: {e}"))?;
        }
        let mut writer = encoder
            .write_header()
            .map_err(|e| format!("PNG header: {e}"))?;
        writer
            .write_image_data(data)
            .map_err(|e| format!("PNG data: {e}"))?;
        writer.finish().map_err(|e| format!("PNG: {e}"))?;
    }
    Ok(out)
}

/// A decoded PNG, for tests and checks: size, bit depth, samples (16-bit samples widened) and text.
#[derive(Debug, Clone)]
pub struct DecodedPng {
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    pub samples: Vec<u16>,
    pub text: Vec<(String, String)>,
}

/// Decodes a grayscale PNG made by this module.
pub fn decode_png(bytes: &[u8]) -> Result<DecodedPng, String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if frame.color_type != png::ColorType::Grayscale {
        return Err(format!("expected grayscale, got {:?}", frame.color_type));
    }
    let buf = &buf[..frame.buffer_size()];
    let samples = match frame.bit_depth {
        png::BitDepth::Sixteen => buf
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
        png::BitDepth::Eight => buf.iter().map(|&b| u16::from(b)).collect(),
        other => return Err(format!("unexpected bit depth {other:?}")),
    };
    let text = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    Ok(DecodedPng {
        width: frame.width,
        height: frame.height,
        bit_depth: frame.bit_depth as u8,
        samples,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heightmap_round_trips_with_its_range() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        let png = heightmap_png(&values, 4, 3, Some("m")).unwrap();
        let d = decode_png(&png).unwrap();
        assert_eq!((d.width, d.height, d.bit_depth), (4, 3, 16));
        assert_eq!(d.samples[0], 0);
        assert_eq!(d.samples[11], 65535);
        assert!(
            d.text.contains(&("value_min".into(), "-1".into())),
            "{:?}",
            d.text
        );
        assert!(
            d.text.contains(&("value_max".into(), "4.5".into())),
            "{:?}",
            d.text
        );
        assert!(d.text.contains(&("unit".into(), "m".into())));
    }

    #[test]
    fn flat_and_non_finite_images_do_not_fail() {
        let png = heightmap_png(&[2.0; 4], 2, 2, None).unwrap();
        assert!(decode_png(&png).unwrap().samples.iter().all(|&s| s == 0));
        let png = heightmap_png(&[f32::NAN, 1.0, 2.0, f32::INFINITY], 2, 2, None).unwrap();
        assert_eq!(decode_png(&png).unwrap().samples, vec![0, 0, 65535, 0]);
        assert!(heightmap_png(&[1.0; 3], 2, 2, None).is_err());
    }

    #[test]
    fn preview_is_downscaled_8_bit() {
        let values: Vec<f32> = (0..128 * 128).map(|i| (i % 128) as f32).collect();
        let d = decode_png(&preview_png(&values, 128, 128, 64).unwrap()).unwrap();
        assert_eq!((d.width, d.height, d.bit_depth), (64, 64, 8));
        assert!(d.samples[0] < 5 && d.samples[63] > 250);
        let d = decode_png(&preview_png(&values[..100 * 30], 100, 30, 64).unwrap()).unwrap();
        assert_eq!((d.width, d.height), (50, 15));
        let d = decode_png(&preview_png(&[1.0; 16], 4, 4, 64).unwrap()).unwrap();
        assert_eq!((d.width, d.height), (4, 4));
    }

    #[test]
    fn encode_inverts_decode() {
        let dec = Decode::Asinh {
            asinh_scale: 0.1,
            height_range: 22.168_64,
            zero_floor: false,
        };
        let v = [-1.0, -0.3, 0.0, 0.5, 1.0];
        let back = encode(&decode(&v, &dec), &dec);
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() < 1e-4, "{v:?} {back:?}");
        }
    }

    #[test]
    fn asinh_decode_matches_the_terrain_package() {
        let dec = Decode::Asinh {
            asinh_scale: 0.1,
            height_range: 22.168_64,
            zero_floor: false,
        };
        let h = decode(&[-1.0, 1.0, 0.0, 5.0], &dec);
        assert_eq!(h[0], 0.0);
        assert!((h[1] - 22.168_64).abs() < 1e-3, "{h:?}");
        // unit 0.5: 0.1 * sinh(0.5 * asinh(221.6864)) = 0.1 * sinh(3.047) ≈ 1.0497
        assert!((h[2] - 1.0497).abs() < 1e-3, "{h:?}");
        assert!((h[3] - 22.168_64).abs() < 1e-3);
        let floored = decode(
            &[0.0, 0.5],
            &Decode::Asinh {
                asinh_scale: 0.1,
                height_range: 22.168_64,
                zero_floor: true,
            },
        );
        assert_eq!(floored[0], 0.0);
        assert!(floored[1] > 0.0);
    }
}
