// drfm.v1.ModelService: thin RPC methods over the Store and the ModelRegistry (validate,
// call, convert back).
#ifndef DRFM_SERVER_MODEL_SERVICE_H_
#define DRFM_SERVER_MODEL_SERVICE_H_

#include "drfm/v1/models.grpc.pb.h"
#include "server/model_registry.h"
#include "server/store.h"

namespace drfm::server {

class ServerMetrics;

// Thread-safe (its collaborators are).
class ModelServiceImpl final : public v1::ModelService::Service {
 public:
  // `metrics` may be null.
  ModelServiceImpl(Store* store, ModelRegistry* registry, ServerMetrics* metrics);

  grpc::Status GetModel(grpc::ServerContext* context, const v1::GetModelRequest* request,
                        v1::Model* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* context, const v1::DeleteModelRequest* request,
                           v1::DeleteModelResponse* response) override;
  grpc::Status Predict(grpc::ServerContext* context, const v1::PredictRequest* request,
                       v1::PredictResponse* response) override;
  grpc::Status PredictStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::PredictResponse, v1::PredictRequest>* stream) override;
  grpc::Status ExportModel(grpc::ServerContext* context, const v1::ExportModelRequest* request,
                           grpc::ServerWriter<v1::ExportModelChunk>* writer) override;
  grpc::Status ImportModel(grpc::ServerContext* context,
                           grpc::ServerReader<v1::ImportModelRequest>* reader,
                           v1::Model* response) override;

 private:
  // Predict with metrics.
  absl::StatusOr<v1::PredictResponse> PredictOne(const v1::PredictRequest& request);

  Store* store_;
  ModelRegistry* registry_;
  ServerMetrics* metrics_;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_MODEL_SERVICE_H_
