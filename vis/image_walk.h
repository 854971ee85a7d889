// image_walk.h - the images of a folder one at a time, for jobs over millions of images.
//
// Same images in the same order as cnn_dataset_open (cnnscope.h), so that image i here is
// row i of `cnnscope preprocess DIR`: if DIR has sub-folders, the images inside them (class
// folders, in sorted order; files directly in DIR are ignored), else the images in DIR; each
// folder's entries in byte order (strcmp) and recursed into where they are folders; names
// starting with '.' skipped; image = a known extension (jpg jpeg png bmp gif tga psd pnm ppm
// pgm hdr, any case).
//
// Memory: only the sorted listings of the folders on the current path are held, never the
// list of all images.
//
//     vis_image_walk *w;
//     vis_image_walk_open("photos", &w);
//     const char *path, *relative;
//     int r;
//     while ((r = vis_image_walk_next(w, &path, &relative)) == 1) use(path);
//     if (r < 0) fprintf(stderr, "%s\n", cnn_last_error());
//     vis_image_walk_close(w);
#ifndef CNNSCOPE_IMAGE_WALK_H
#define CNNSCOPE_IMAGE_WALK_H

#include "cnnscope.h"

typedef struct vis_image_walk vis_image_walk;

cnn_status vis_image_walk_open(const char *dir, vis_image_walk **out);
// 1 and the next image (path = dir/relative; both valid until the next call), 0 at the end,
// -1 on an error (a folder that cannot be read, nesting deeper than 32 folders, no memory).
int vis_image_walk_next(vis_image_walk *w, const char **path, const char **relative);
void vis_image_walk_close(vis_image_walk *w);

#endif
