// batchnorm.c - batch normalisation at inference time, and folding it into the conv before it.
//
// Dims: N batch, C channels, HW = H*W positions per channel; K output channels of the conv,
// E = C/groups*R*S weights per output channel.
//
//   out[n,c,i] = (inp[n,c,i] - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]
#include <math.h>
#include "ops.h"

void batchnorm_forward_ref(float *out, const float *inp, const float *gamma, const float *beta,
                           const float *mean, const float *var, float eps, int N, int C, int HW) {
    // out, inp are (N,C,HW) and may be the same buffer; gamma, beta, mean, var are (C)
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * HW > 65536)
    for (int plane = 0; plane < planes; plane++) {
        int c = plane % C;
        float inv_std = 1.0f / sqrtf(var[c] + eps);
        const float *x = inp + (size_t)plane * HW;
        float *y = out + (size_t)plane * HW;
        for (int i = 0; i < HW; i++) y[i] = (x[i] - mean[c]) * inv_std * gamma[c] + beta[c];
    }
}

void batchnorm_fold_into_conv(float *weight_out, float *bias_out, const float *weight,
                              const float *bias, const float *gamma, const float *beta,
                              const float *mean, const float *var, float eps, int K,
                              int weight_elems_per_k) {
    // weight_out, weight are (K,E); bias_out is (K); bias is (K) or NULL; gamma..var are (K).
    // bn(conv(x)) = (w.x + b - mean) * scale + beta with scale = gamma / sqrt(var + eps)
    //             = (scale*w).x + ((b - mean) * scale + beta).
    // Computed in double so the folded weights are the correctly rounded products.
    for (int k = 0; k < K; k++) {
        double scale = (double)gamma[k] / sqrt((double)var[k] + (double)eps);
        const float *w = weight + (size_t)k * weight_elems_per_k;
        float *w_out = weight_out + (size_t)k * weight_elems_per_k;
        for (int i = 0; i < weight_elems_per_k; i++) w_out[i] = (float)(w[i] * scale);
        double b = bias ? bias[k] : 0.0;
        bias_out[k] = (float)((b - mean[k]) * scale + beta[k]);
    }
}

// Backward (inference statistics are constants): a per-channel scale,
//   dinp[n,c,i] += dout[n,c,i] * gamma[c] / sqrt(var[c] + eps)
// The gradient through a conv with this batch norm folded into it is the same scale followed
// by the conv's backward with the unfolded weights.
void batchnorm_backward_ref(float *dinp, const float *dout, const float *gamma, const float *var,
                            float eps, int N, int C, int HW) {
    // dinp, dout are (N,C,HW); gamma, var are (C); dinp accumulates
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * HW > 65536)
    for (int plane = 0; plane < planes; plane++) {
        int c = plane % C;
        float inv_std = 1.0f / sqrtf(var[c] + eps);
        const float *dy = dout + (size_t)plane * HW;
        float *dx = dinp + (size_t)plane * HW;
        for (int i = 0; i < HW; i++) dx[i] += dy[i] * inv_std * gamma[c];
    }
}
