"""Reference DCNv2 forwards for tests/test_dcn.py, copied VERBATIM from the fixture generator.

source: shared/fixtures/make_reference_plus_r50.py (../shared from the repository root):
  * ``dcn_v2_columns`` / ``dcn_v2_forward``: the plain-torch ``_ext.dcn_v2_forward`` the generator gives the
    original external/DCNv2/dcn_v2.py (bit-identical columns to the original CUDA kernel text, per its verify-dcn);
    NCHW tensors, weight OIHW. Needs torch (imported inside the functions).
  * ``dcn_numpy_loop``: its independent per-output-pixel float64 numpy loop (NCHW, weight OIHW).
Only this docstring and the imports were added; the function bodies are unchanged.
"""

import numpy as np


def dcn_v2_columns(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                   dilation_h, dilation_w, deformable_group):
    """modulated_deformable_im2col_gpu_kernel + dmcn_im2col_bilinear of external/DCNv2/src/cuda/
    dcn_v2_im2col_cuda.cu, vectorised.  Returns columns [b, c*kh*kw, ho*wo] (row = c*kh*kw + i*kw + j)
    and (ho, wo).  Same float32 operations in the same order as the kernel:
      h_im = (h_in + i*dilation_h) + offset_h   (offset channel 2*(i*kw+j) of the deformable group)
      w_im = (w_in + j*dilation_w) + offset_w   (offset channel 2*(i*kw+j)+1)
      val  = 0 unless h_im > -1 and w_im > -1 and h_im < H and w_im < W, else bilinear with every corner
             outside the image contributing 0:  w1*v1 + w2*v2 + w3*v3 + w4*v4
      col  = val * mask  (mask channel i*kw+j)."""
    import torch
    b, c, h, w = input.shape
    ho = (h + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) // stride_h + 1
    wo = (w + 2 * pad_w - (dilation_w * (kernel_w - 1) + 1)) // stride_w + 1
    k = kernel_h * kernel_w
    dg = deformable_group
    cpg = c // dg
    assert c % dg == 0
    assert tuple(offset.shape) == (b, dg * 2 * k, ho, wo), (tuple(offset.shape), (b, dg * 2 * k, ho, wo))
    assert tuple(mask.shape) == (b, dg * k, ho, wo), tuple(mask.shape)
    dev = input.device
    off = offset.reshape(b, dg, k, 2, ho, wo)
    off_h = off[:, :, :, 0]                                   # [b, dg, k, ho, wo]
    off_w = off[:, :, :, 1]
    m = mask.reshape(b, dg, k, ho, wo)
    ki = torch.arange(kernel_h, device=dev).repeat_interleave(kernel_w)    # k = i * kernel_w + j
    kj = torch.arange(kernel_w, device=dev).repeat(kernel_h)
    h_in = torch.arange(ho, device=dev) * stride_h - pad_h
    w_in = torch.arange(wo, device=dev) * stride_w - pad_w
    base_h = (h_in.view(1, ho, 1) + (ki * dilation_h).view(k, 1, 1)).to(input.dtype)   # exact integers
    base_w = (w_in.view(1, 1, wo) + (kj * dilation_w).view(k, 1, 1)).to(input.dtype)
    h_im = base_h + off_h
    w_im = base_w + off_w
    inside = (h_im > -1) & (w_im > -1) & (h_im < h) & (w_im < w)
    h_low_f = torch.floor(h_im)
    w_low_f = torch.floor(w_im)
    lh = h_im - h_low_f
    lw = w_im - w_low_f
    hh = 1 - lh
    hw = 1 - lw
    h_low = h_low_f.long()
    w_low = w_low_f.long()
    h_high = h_low + 1
    w_high = w_low + 1
    w1 = hh * hw
    w2 = hh * lw
    w3 = lh * hw
    w4 = lh * lw
    x = input.reshape(b, dg, cpg, h * w)
    zero = torch.zeros((), dtype=input.dtype, device=dev)

    def corner(hi, wi, ok):
        idx = (hi.clamp(0, h - 1) * w + wi.clamp(0, w - 1)).reshape(b, dg, 1, k * ho * wo)
        v = torch.gather(x, 3, idx.expand(b, dg, cpg, k * ho * wo)).view(b, dg, cpg, k, ho, wo)
        return torch.where(ok.unsqueeze(2), v, zero)

    # corner conditions exactly as in dmcn_im2col_bilinear
    v1 = corner(h_low, w_low, (h_low >= 0) & (w_low >= 0))
    v2 = corner(h_low, w_high, (h_low >= 0) & (w_high <= w - 1))
    v3 = corner(h_high, w_low, (h_high <= h - 1) & (w_low >= 0))
    v4 = corner(h_high, w_high, (h_high <= h - 1) & (w_high <= w - 1))
    e = lambda t: t.unsqueeze(2)  # noqa: E731  broadcast over the channels of the group
    val = e(w1) * v1 + e(w2) * v2 + e(w3) * v3 + e(w4) * v4
    val = torch.where(e(inside), val, zero)
    col = val * e(m)                                          # [b, dg, cpg, k, ho, wo]
    return col.reshape(b, c * k, ho * wo), (ho, wo)


def dcn_v2_forward(input, weight, bias, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
                   pad_h, pad_w, dilation_h, dilation_w, deformable_group):
    """dcn_v2_cuda_forward: output = bias (ones x bias GEMM) + weight[co, c*kh*kw] @ columns (GEMM, beta=1)."""
    import torch
    assert weight.shape[2] == kernel_h and weight.shape[3] == kernel_w and weight.shape[1] == input.shape[1]
    cols, (ho, wo) = dcn_v2_columns(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
                                    pad_h, pad_w, dilation_h, dilation_w, deformable_group)
    b = input.size(0)
    co = weight.size(0)
    out = torch.matmul(weight.reshape(co, -1), cols) + bias.view(1, co, 1)
    return out.view(b, co, ho, wo).contiguous()


def dcn_numpy_loop(x, offset, mask, weight, bias, stride, pad, dil, dg=1):
    """Per-output-pixel float64 loop written from the kernel's description (not from the torch code)."""
    b, c, h, w = x.shape
    co, ci, kh, kw = weight.shape
    cpg = c // dg
    ho = (h + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    wo = (w + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    x = x.astype(np.float64)
    out = np.zeros((b, co, ho, wo))

    def pix(n, ch, yy, xx):
        return x[n, ch, yy, xx] if (0 <= yy < h and 0 <= xx < w) else 0.0

    for n in range(b):
        for oy in range(ho):
            for ox in range(wo):
                col = np.zeros((ci, kh, kw))
                for ch in range(ci):
                    g = ch // cpg
                    for i in range(kh):
                        for j in range(kw):
                            kk = i * kw + j
                            py = oy * stride - pad + i * dil + float(offset[n, g * 2 * kh * kw + 2 * kk, oy, ox])
                            px = ox * stride - pad + j * dil + float(offset[n, g * 2 * kh * kw + 2 * kk + 1, oy, ox])
                            if not (-1 < py < h and -1 < px < w):
                                continue
                            y0 = int(np.floor(py))
                            x0 = int(np.floor(px))
                            ly = py - y0
                            lx = px - x0
                            v = ((1 - ly) * (1 - lx) * pix(n, ch, y0, x0) + (1 - ly) * lx * pix(n, ch, y0, x0 + 1)
                                 + ly * (1 - lx) * pix(n, ch, y0 + 1, x0) + ly * lx * pix(n, ch, y0 + 1, x0 + 1))
                            col[ch, i, j] = v * float(mask[n, g * kh * kw + kk, oy, ox])
                out[n, :, oy, ox] = np.tensordot(weight.astype(np.float64), col, axes=3) + bias
    return out
