#include "common.h"

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      FN("cdcCuts", sn_cdc_cuts),
      FN("dataRegions", sn_data_regions),
      FN("flock", sn_flock),
      FN("funlock", sn_funlock),
      FN("listXattrs", sn_list_xattrs),
      FN("setXattr", sn_set_xattr),
      FN("mknod", sn_mknod),
      FN("utimensNoFollow", sn_utimens_nofollow),
      FN("scanDir", sn_scan_dir),
      FN("scanDirs", sn_scan_dirs),
      FN("readSmallFiles", sn_read_small_files),
      FN("setMmapThreshold", sn_set_mmap_threshold),
      FN("trimMalloc", sn_trim_malloc),
      FN("setTrimThreshold", sn_set_trim_threshold),
      FN("preadCached", sn_pread_cached),
      FN("dropCachedPages", sn_drop_cached_pages),
      FN("newFile", sn_new_file),
      FN("zstdDecompress", sn_zstd_decompress),
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0],
                             props) != napi_ok) {
    sn_throw_last(env);
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
