# The cold-start chart of RESULTS.md: one stacked bar per approach (medians of its phases),
# the total's median on top. Called by bench/run.sh:
#   gnuplot -e "datafile='cold-start.dat'; outfile='cold-start.svg'; chart_title='…'" bench/cold-start.gp
# datafile columns: "approach" fetch prepare run total min max (seconds).
set terminal svg size 760,440 dynamic font "sans,12" background rgb "white"
set output outfile
if (!exists("chart_title")) chart_title = "Cold start: empty store to the first command's exit (median)"
set title chart_title
set ylabel "seconds"
set bmargin 5
set yrange [0:*]
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror scale 0
set ytics nomirror
set key top left reverse Left noautotitle
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border rgb "#333333"
set boxwidth 0.55
set offsets 0, 0, graph 0.12, 0
plot datafile using 2:xtic(1) title "fetch (pull / skopeo copy)" lc rgb "#4e79a7", \
     '' using 3 title "prepare rootfs (mount / unpack / archivemount)" lc rgb "#f28e2b", \
     '' using 4 title "run the command" lc rgb "#59a14f", \
     '' using ($0):($5):($5 > 0 ? sprintf("%.2f s", $5) : "n/a") with labels offset 0,0.8 notitle
