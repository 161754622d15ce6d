// drfm.v1.DatasetService: chunked, checksummed, deduplicated uploads into the Store, and the
// listing of stored and built-in datasets.
#ifndef DRFM_SERVER_DATASET_SERVICE_H_
#define DRFM_SERVER_DATASET_SERVICE_H_

#include <cstdint>

#include "drfm/v1/datasets.grpc.pb.h"
#include "server/datasets.h"
#include "server/store.h"

namespace drfm::server {

struct UploadLimits {
  int64_t max_rows = int64_t{1} << 26;         // rows of one dataset
  int64_t max_cols = int64_t{1} << 20;         // columns of one dataset
  int64_t max_feature_bytes = int64_t{16} << 30;  // rows * cols * 4
};

// Thread-safe (its collaborators are).
class DatasetServiceImpl final : public v1::DatasetService::Service {
 public:
  DatasetServiceImpl(Store* store, DatasetResolver* resolver, UploadLimits limits = {});

  // The first message is the header; then chunks of float32 little-endian row-major features and
  // int32 labels, in any interleaving. The dataset becomes visible only after the byte counts,
  // every value (finite features, labels in [0, num_classes)) and the optional SHA-256 (of the
  // feature bytes followed by the label bytes) check out. Identical content returns the stored
  // dataset. INVALID_ARGUMENT for a bad header or payload, DATA_LOSS for a checksum mismatch,
  // ALREADY_EXISTS for a name that holds other content.
  grpc::Status UploadDataset(grpc::ServerContext* context,
                             grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                             v1::Dataset* response) override;
  grpc::Status GetDataset(grpc::ServerContext* context, const v1::GetDatasetRequest* request,
                          v1::Dataset* response) override;
  // The first page starts with the installed built-in datasets.
  grpc::Status ListDatasets(grpc::ServerContext* context, const v1::ListDatasetsRequest* request,
                            v1::ListDatasetsResponse* response) override;
  grpc::Status DeleteDataset(grpc::ServerContext* context, const v1::DeleteDatasetRequest* request,
                             v1::DeleteDatasetResponse* response) override;

 private:
  Store* store_;
  DatasetResolver* resolver_;
  UploadLimits limits_;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_DATASET_SERVICE_H_
