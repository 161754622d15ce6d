// How the CLI shows things: aligned text tables, human units, progress bars, the live display of
// a running job (a status line redrawn in place on a terminal, plain lines otherwise, and a table
// that grows a row per layer or a block per MLP measurement), and hand-written SVG charts: the
// per-layer collapse curves of a Deep RFM (log-scale nc1 and nc2 of a layer's input, projection
// and features) and the per-layer collapse and NFA curves of an MLP across epochs. Everything
// returns or writes text; nothing here talks to a server.
#ifndef DRFM_CLIENT_RENDER_H_
#define DRFM_CLIENT_RENDER_H_

#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/reports.pb.h"

namespace drfm::client {

// A text table: a header row and data rows, columns padded to their widest cell and separated by
// two spaces, trailing blanks trimmed. Columns are left-aligned unless marked right-aligned
// (numbers). Cells are measured in UTF-8 code points. A value type.
class Table {
 public:
  enum class Align { kLeft, kRight };

  // `align` may be shorter than `headers`; missing entries are kLeft.
  explicit Table(std::vector<std::string> headers, std::vector<Align> align = {});

  // A row with fewer cells than headers is padded with empty cells; extra cells are dropped.
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }

  // Header line, then one line per row, each ending in '\n'.
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<Align> align_;
  std::vector<std::vector<std::string>> rows_;
};

// Number of UTF-8 code points in `text` (its width on a terminal, for the text we print).
size_t DisplayWidth(std::string_view text);

// "512 B", "1.5 KiB", "188.2 MiB", "2.00 GiB".
std::string FormatBytes(double bytes);
// "850ms", "12.3s", "3m04s", "1h02m".
std::string HumanDuration(absl::Duration duration);
// "111.8 GFLOP", "2.1 TFLOP".
std::string FormatFlops(double flops);
// A collapse metric or other positive quantity in 8 characters or fewer: fixed 4 decimals in
// [1e-3, 1e5), else scientific ("1.23e-05"); "0" for zero, "-" for NaN.
std::string FormatMetric(double value);
// An accuracy in [0, 1] as "0.8460".
std::string FormatAccuracy(double value);
// "2024-05-01 12:03:04" in the local time zone; "-" when unset (seconds and nanos 0).
std::string FormatTimestamp(const google::protobuf::Timestamp& time);
absl::Time ToAbslTime(const google::protobuf::Timestamp& time);

// "[=========>          ]": `width` cells between the brackets, `fraction` clamped to [0, 1].
std::string ProgressBar(double fraction, int width);

// One line of a transfer's progress: "upload [=====>    ]  45%  85.2 MiB / 188.2 MiB  12.1 MiB/s".
std::string TransferLine(std::string_view label, int64_t done, int64_t total,
                         absl::Duration elapsed, int bar_width = 24);

// The per-layer table of a Deep RFM fit, with fixed column widths so it can grow a row at a time:
// layer, nc1 and nc2 of the input / projected / features, train and test accuracy, seconds (the
// sum of the layer's phases). The readout row shows "readout" and "-" where it has no metric.
std::string LayerTableHeader();
std::string LayerTableRow(const v1::LayerReport& report);
// Header and every row.
std::string LayerTable(const std::vector<v1::LayerReport>& reports);

// The per-measurement table of an MLP or analysis job, fixed column widths so it can grow a row
// at a time: epoch, train and test loss, train and test accuracy, seconds the measurement took.
std::string NetworkTableHeader();
std::string NetworkTableRow(const v1::NetworkReport& report);

// The per-layer table of one measurement (DNN.md): layer (the output layer marked "out"), nc1 of
// the layer's input `none`, of the pre-activation `right` and of the activation `left` ("-" for
// the output layer, which has none), the NFA correlation of W_l^T W_l with AGOP_l^{1/2} (`nfa`)
// and with AGOP_l (`nfa_raw`), and the largest singular value of W_l (`sigma_1`). Each line
// starts with `indent`.
std::string NetworkLayerTable(const v1::NetworkReport& report, std::string_view indent = "");

// One measurement as the live display prints it: a summary line ("epoch 10: train loss 0.0812
// accuracy 0.9100  test loss 0.0950 accuracy 0.8700  (420ms)"; for an analysis, "measured: loss
// ...  accuracy ...") and its layer table, indented.
std::string NetworkReportBlock(const v1::NetworkReport& report, bool analysis);

// A correlation in [-1, 1] as "0.9731" / "-0.1200"; "-" for NaN.
std::string FormatCorrelation(double value);

// Short lowercase name of a phase ("kernel", "solve", "agop", ...).
std::string PhaseName(v1::Progress::Phase phase);

// Fraction of a Deep RFM layer done when `phase` is `fraction` done: the phases of a feature layer
// (kernel, solve, agop, project, features, metrics) or of the readout (kernel, solve, metrics)
// are counted as equal steps. A layer revisits phases (the input's metrics come first, the test
// kernel after the solve, RFM iterations repeat kernel..agop), so a display keeps the maximum.
double LayerFraction(v1::Progress::Phase phase, double fraction, bool readout);

// The live view of one job, fed with its events as they arrive. Interactive (a terminal): one
// status line ("layer 2/4 [=====>   ] agop 45%  3.2s  total 15.4s"; for an MLP "epoch 12/250
// [===>    ] train ..." while training and "measuring layer 2/4 ..." while measuring) redrawn in
// place, with the layer table (Deep RFM) or each measurement's block (MLP, analysis), state
// changes and notices printed above it as they happen. Otherwise: plain lines, one per state
// change, phase change (for an MLP: when training or measuring starts, not per layer or epoch),
// layer, measurement and notice, never a carriage return. Thread-safe: a ticker thread may call
// Tick while the watch thread calls OnEvent.
class JobDisplay {
 public:
  JobDisplay(std::ostream& out, bool interactive, std::string job_id);

  // What is known from GetJob / SubmitFit before the first event: the number of layers (for
  // "layer 2/4"), the kind of job and, for an MLP, its epochs and depth. Optional.
  void SetJob(const v1::Job& job);

  // One event; `received` is when it arrived (used when the event carries no time).
  void OnEvent(const v1::JobEvent& event, absl::Time received);

  // A notice line (e.g. "connection lost; re-attaching"), printed above the status line.
  void Notice(std::string_view text);

  // Redraws the status line with the elapsed times as of `now` (interactive only).
  void Tick(absl::Time now);

  // Removes the status line (interactive). Idempotent.
  void Finish();

  // The layer reports (Deep RFM) and network reports (MLP, analysis) received so far, in order.
  std::vector<v1::LayerReport> reports() const;
  std::vector<v1::NetworkReport> network_reports() const;

 private:
  void PrintLineLocked(std::string_view line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RedrawLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string StatusLineLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string LayerLabelLocked(int layer) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True for an MLP or analysis job, or a phase only they have.
  bool IsNetworkLocked(v1::Progress::Phase phase) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::ostream& out_ ABSL_GUARDED_BY(mu_);
  const bool interactive_;
  const std::string job_id_;
  v1::Job::Kind kind_ ABSL_GUARDED_BY(mu_) = v1::Job::KIND_UNSPECIFIED;
  int layers_total_ ABSL_GUARDED_BY(mu_) = 0;
  int epochs_total_ ABSL_GUARDED_BY(mu_) = 0;    // MLP: configured epochs (0 = unknown)
  int network_layers_ ABSL_GUARDED_BY(mu_) = 0;  // MLP: depth + 1 (0 = unknown)
  v1::Job::State state_ ABSL_GUARDED_BY(mu_) = v1::Job::STATE_UNSPECIFIED;
  std::optional<absl::Time> start_ ABSL_GUARDED_BY(mu_);        // first RUNNING (or event)
  std::optional<absl::Time> layer_start_ ABSL_GUARDED_BY(mu_);  // first event of the layer
  int layer_ ABSL_GUARDED_BY(mu_) = 0;
  int epoch_ ABSL_GUARDED_BY(mu_) = 0;
  v1::Progress::Phase phase_ ABSL_GUARDED_BY(mu_) = v1::Progress::PHASE_UNSPECIFIED;
  double phase_fraction_ ABSL_GUARDED_BY(mu_) = 0;
  double layer_fraction_ ABSL_GUARDED_BY(mu_) = 0;
  bool layer_worked_ ABSL_GUARDED_BY(mu_) = false;  // a phase other than METRICS was seen
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;     // the readout is done
  bool status_shown_ ABSL_GUARDED_BY(mu_) = false;
  bool header_printed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<v1::LayerReport> reports_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::NetworkReport> network_reports_ ABSL_GUARDED_BY(mu_);
};

// Text as XML character data or an attribute value: & < > " ' become entities; control
// characters other than tab, line feed and carriage return (not allowed in XML 1.0) are dropped.
std::string XmlEscape(std::string_view text);

// Decade exponents e with 10^e covering [lo, hi] (lo, hi > 0): floor(log10 lo) ..
// ceil(log10 hi), at least two.
std::vector<int> LogDecades(double lo, double hi);

// Ticks of a linear axis covering [lo, hi] (finite): the multiples of a "nice" step (1, 2 or 5 x
// 10^k) from the one at or below lo to the one at or above hi, the step chosen so there are at
// most `max_ticks` of them; at least two. In increasing order.
std::vector<double> LinearTicks(double lo, double hi, int max_ticks = 6);

// Integer ticks for an x axis spanning [lo, hi] (lo <= hi): the multiples of a nice step (1, 2 or
// 5 x 10^k, at least 1) in [lo, hi], at most about `max_ticks` of them.
std::vector<int> IntegerTicks(int lo, int hi, int max_ticks = 10);

// A curve of a chart: points (x, y) joined in order. Points with a non-finite coordinate, and on
// a log axis points with y <= 0, cannot be shown and are left out.
struct PlotSeries {
  std::string name;   // legend label
  std::string color;  // CSS color
  std::string dash;   // stroke-dasharray, empty = solid
  std::vector<std::pair<double, double>> points;
  // Drawn next to the curve's last point instead of a legend entry (for panels with many curves,
  // e.g. one per layer). Empty: the series is in the chart's legend.
  std::string end_label;
};

// One plot area with integer x ticks and a log-scale (default) or linear y axis.
struct PlotPanel {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  // Label of an x tick other than the number itself (e.g. the readout layer). Such x values always
  // get a tick.
  std::vector<std::pair<int, std::string>> x_tick_labels;
  // false: a linear y axis with nice ticks covering the data (e.g. correlations).
  bool log_y = true;
};

// Panels under a title, with one legend (the series names without an end_label, each once)
// below: in one row, or in rows of `columns` panels.
struct Chart {
  std::string title;
  std::string subtitle;
  std::vector<PlotPanel> panels;
  int columns = 0;  // panels per row; 0 = all in one row
};

// A standalone SVG 1.1 document: every panel is a <g class="panel"> and every series one
// <polyline class="series" data-series="PANEL: NAME"> plus a <circle> marker (with a hover
// <title>) per point; decade grid lines and labels on a log axis, nice ticks on a linear one;
// all text escaped.
std::string RenderSvg(const Chart& chart);

// The collapse curves of a Deep RFM fit: panels "nc1" and "nc2", each with the series input
// (layers 1..L and the readout L+1), projected and features (layers 1..L).
Chart CollapseChart(const std::vector<v1::LayerReport>& reports, std::string title,
                    std::string subtitle);

// The curves of an MLP's measurements (DNN.md). With two or more measurements, across epochs: a
// panel per layer ("layer l", the last "layer L+1 (output)") with the nc1 of none, right and left
// (log scale), then a panel "NFA correlation" with one curve per layer (linear scale, each curve
// labelled at its end). With one measurement (an analysis, or an MLP trained for 0 epochs),
// across layers: a panel of the nc1 of none, right and left by layer and a panel of both NFA
// correlations by layer. Panels are laid out three to a row.
Chart NetworkChart(const std::vector<v1::NetworkReport>& reports, std::string title,
                   std::string subtitle);

// Writes `svg` to `path` (replacing it). Errors name the path.
absl::Status WriteTextFile(const std::string& path, std::string_view text);

}  // namespace drfm::client

#endif  // DRFM_CLIENT_RENDER_H_
