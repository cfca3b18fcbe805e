/* srv_reports.h -- the reproduction reports of --reports (report.json, report.md, figures/ of each folder) over HTTP. */
#ifndef LOUPE_SRV_REPORTS_H
#define LOUPE_SRV_REPORTS_H

#include "srv_http.h"

/* GET /v1/reports: {"reports": [{name, date, commit, quick, figures}], "skipped": [{name, error}]},
 * one entry per folder of --reports with a report.json, sorted by name. */
void srv_h_reports(srv_req *r);

/* GET /v1/reports/{name}: the report's report.json with "name" set to the folder's
 * name and "markdown" the text of report.md (null without one). */
void srv_h_report(srv_req *r);

/* GET /v1/reports/{name}/figures/{file}: a PNG of the report's figures/ folder. */
void srv_h_report_figure(srv_req *r);

/* 1 when s may name a report or a figure: 1..255 characters of [A-Za-z0-9._-],
 * not starting with '.', without "..". Anything else is refused before the
 * file system is asked. */
int srv_reports_name_ok(const char *s);

#endif
