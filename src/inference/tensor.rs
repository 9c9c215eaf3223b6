//! The values that flow along a workflow's edges: one NCHW float32 image with batch 1, kept in
//! memory between the nodes of a job on a worker (no PNG round trip), and stored byte-exact as a
//! cache entry so a cached node feeds its consumers the very values it produced.
//!
//! Bytes: `ATT1`, then channels, height and width as little-endian u32, then the values as
//! little-endian f32, row-major per channel.

use super::image;

/// The largest image a node may produce or take: 1024×1024 pixels (a ×4 upscale of 256², or
/// two ×2 of the terrain's 128²). Bounds memory and the worker protocol's message size.
pub const MAX_PIXELS: usize = 1024 * 1024;
/// Channels a tensor may have: 1 (heightmap, mask), 3 (image), 4 (RGBA, decoded uploads).
pub const MAX_CHANNELS: usize = 4;

const MAGIC: &[u8; 4] = b"ATT1";
const HEADER: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Tensor {
    /// Checks the size against the data and the limits.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    ) -> Result<Self, String> {
        if channels == 0 || channels > MAX_CHANNELS || height == 0 || width == 0 {
            return Err(format!(
                "a {channels}x{height}x{width} image is not valid (1 to {MAX_CHANNELS} channels, non-empty)"
            ));
        }
        let pixels = height.saturating_mul(width);
        if pixels > MAX_PIXELS {
            return Err(format!(
                "a {width}x{height} image is larger than the {MAX_PIXELS}-pixel limit"
            ));
        }
        if data.len() != pixels * channels {
            return Err(format!(
                "a {channels}x{height}x{width} image needs {} values, got {}",
                pixels * channels,
                data.len()
            ));
        }
        Ok(Tensor {
            channels,
            height,
            width,
            data,
        })
    }

    /// From an ONNX output shape `[1, C, H, W]`.
    pub fn from_shape(shape: &[i64], data: Vec<f32>) -> Result<Self, String> {
        match *shape {
            [1, c, h, w] if c > 0 && h > 0 && w > 0 => {
                Self::new(c as usize, h as usize, w as usize, data)
            }
            _ => Err(format!("expected a [1, C, H, W] tensor, got {shape:?}")),
        }
    }

    pub fn shape(&self) -> [usize; 4] {
        [1, self.channels, self.height, self.width]
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.data.len() * 4);
        out.extend_from_slice(MAGIC);
        for d in [self.channels, self.height, self.width] {
            // Bounded by MAX_PIXELS and MAX_CHANNELS: fits.
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses [`Tensor::to_bytes`]; every size is checked before anything is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err("not a tensor".into());
        }
        let dim = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[4 + 4 * i..8 + 4 * i]);
            u32::from_le_bytes(b) as usize
        };
        let (c, h, w) = (dim(0), dim(1), dim(2));
        let pixels = h.checked_mul(w).ok_or("tensor size overflows")?;
        if pixels > MAX_PIXELS || c == 0 || c > MAX_CHANNELS {
            return Err(format!("tensor {c}x{h}x{w} is outside the limits"));
        }
        if bytes.len() != HEADER + pixels * c * 4 {
            return Err("tensor data does not match its size".into());
        }
        let data = bytes[HEADER..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Self::new(c, h, w, data)
    }

    /// One channel's values.
    pub fn plane(&self, channel: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[channel * n..(channel + 1) * n]
    }

    /// The picture people see: one channel as a 16-bit grayscale PNG, min–max normalised with its
    /// range in text chunks (heightmaps, masks); three or four as 8-bit RGB(A), clamped to 0..1.
    pub fn to_png(&self, unit: Option<&str>) -> Result<Vec<u8>, String> {
        let (w, h) = (self.width as u32, self.height as u32);
        match self.channels {
            1 => image::heightmap_png(&self.data, w, h, unit),
            3 | 4 => {
                let n = self.height * self.width;
                let mut bytes = Vec::with_capacity(n * self.channels);
                for i in 0..n {
                    for c in 0..self.channels {
                        let v = self.data[c * n + i];
                        let v = if v.is_finite() {
                            v.clamp(0.0, 1.0)
                        } else {
                            0.0
                        };
                        bytes.push((v * 255.0).round() as u8);
                    }
                }
                image::rgb_png(&bytes, w, h, self.channels == 4)
            }
            c => Err(format!("cannot show a {c}-channel image")),
        }
    }

    /// Decodes an uploaded PNG (any colour type and depth) to RGBA in 0..1, `[1, 4, H, W]`.
    /// The size is checked from the header before the pixels are decoded.
    pub fn from_png_rgba(bytes: &[u8]) -> Result<Self, String> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder
            .read_info()
            .map_err(|e| format!("not a readable PNG: {e}"))?;
        let (w, h) = {
            let info = reader.info();
            (info.width as usize, info.height as usize)
        };
        if w.saturating_mul(h) > MAX_PIXELS || w == 0 || h == 0 {
            return Err(format!(
                "the image is {w}x{h}; images up to {MAX_PIXELS} pixels are accepted"
            ));
        }
        let size = reader
            .output_buffer_size()
            .ok_or("the image is too large")?;
        let mut buf = vec![0u8; size];
        let frame = reader
            .next_frame(&mut buf)
            .map_err(|e| format!("not a readable PNG: {e}"))?;
        let buf = &buf[..frame.buffer_size()];
        let samples = frame.color_type.samples();
        let n = w * h;
        if buf.len() < n * samples {
            return Err("the PNG's pixel data is short".into());
        }
        let mut data = vec![0f32; n * 4];
        for i in 0..n {
            let px = &buf[i * samples..(i + 1) * samples];
            let (r, g, b, a) = match samples {
                1 => (px[0], px[0], px[0], 255),
                2 => (px[0], px[0], px[0], px[1]),
                3 => (px[0], px[1], px[2], 255),
                _ => (px[0], px[1], px[2], px[3]),
            };
            for (c, v) in [r, g, b, a].into_iter().enumerate() {
                data[c * n + i] = f32::from(v) / 255.0;
            }
        }
        Self::new(4, h, w, data)
    }

    /// Bilinear resampling of every channel to `height × width` (pixel centres aligned).
    pub fn resized(&self, height: usize, width: usize) -> Result<Tensor, String> {
        if (height, width) == (self.height, self.width) {
            return Ok(self.clone());
        }
        let mut data = Vec::with_capacity(self.channels * height * width);
        let sy = self.height as f32 / height as f32;
        let sx = self.width as f32 / width as f32;
        for c in 0..self.channels {
            let plane = self.plane(c);
            for y in 0..height {
                let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (self.height - 1) as f32);
                let (y0, ty) = (fy.floor() as usize, fy.fract());
                let y1 = (y0 + 1).min(self.height - 1);
                for x in 0..width {
                    let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (self.width - 1) as f32);
                    let (x0, tx) = (fx.floor() as usize, fx.fract());
                    let x1 = (x0 + 1).min(self.width - 1);
                    let at = |yy: usize, xx: usize| plane[yy * self.width + xx];
                    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
                    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
                    data.push(top * (1.0 - ty) + bottom * ty);
                }
            }
        }
        Tensor::new(self.channels, height, width, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_exactly_and_refuse_garbage() {
        let t = Tensor::new(3, 2, 5, (0..30).map(|i| i as f32 * 0.1 - 1.0).collect()).unwrap();
        assert_eq!(Tensor::from_bytes(&t.to_bytes()).unwrap(), t);
        let mut bad = t.to_bytes();
        bad.pop();
        assert!(Tensor::from_bytes(&bad).is_err());
        let mut huge = t.to_bytes();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Tensor::from_bytes(&huge).is_err());
        assert!(Tensor::from_bytes(b"nope").is_err());
        assert!(Tensor::new(1, 2048, 2048, vec![0.0; 2048 * 2048]).is_err());
    }

    #[test]
    fn png_round_trip_and_resize() {
        let t = Tensor::new(3, 4, 4, vec![0.5; 48]).unwrap();
        let png = t.to_png(None).unwrap();
        let back = Tensor::from_png_rgba(&png).unwrap();
        assert_eq!((back.channels, back.height, back.width), (4, 4, 4));
        assert!((back.data[0] - 128.0 / 255.0).abs() < 1e-6);
        assert_eq!(back.plane(3), &[1.0; 16]);
        let r = t.resized(8, 2).unwrap();
        assert_eq!((r.height, r.width), (8, 2));
        assert!(r.data.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }
}
