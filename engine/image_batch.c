// image_batch.c - decodes and preprocesses a batch of images in parallel.
#include <stdlib.h>
#include <string.h>

#include "cnnscope.h"

cnn_status cnn_image_load_batch(const cnn_model_info *info, const char *const *paths, int n,
                                const cnn_image_limits *limits, float *out) {
    size_t per_image = (size_t)info->channels * (size_t)info->height * (size_t)info->width;
    // Error messages are per thread: keep the first failure (in path order) and its text.
    int first_failure = n;
    cnn_status failure = CNN_OK;
    char message[1024] = "";
    // Decoding costs about as much as the network for small models: one image per iteration.
    #pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        cnn_status st = cnn_image_load_ex(info, paths[i], limits, out + (size_t)i * per_image, NULL);
        if (st != CNN_OK) {
            #pragma omp critical(cnn_image_batch_failure)
            {
                if (i < first_failure) {
                    first_failure = i;
                    failure = st;
                    snprintf(message, sizeof message, "%s", cnn_last_error());
                }
            }
        }
    }
    if (failure != CNN_OK) return cnn_fail(failure, "%s", message);
    return CNN_OK;
}
