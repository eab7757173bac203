/*
 * OHIF viewer configuration of the `ohif` image (Dockerfile target ohif).
 *
 * The viewer and the PACS's DICOMweb API are served from one origin by nginx
 * (deploy/nginx/viewer.conf): "/" is OHIF, "/dicom-web" and "/wado" go to
 * Orthanc.  One origin means no CORS set-up in the PACS.
 * OHIF shows our DICOM SEG as a segmentation overlay and our TID 1500 SR as
 * measurements (the CMB centres) with its default extensions.
 */
window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  strictZSpacingForVolumeViewport: true,
  // Open our SEG overlay and SR markers without a "load / track?" prompt.
  disableConfirmationPrompts: true,
  measurementTrackingMode: 'simplified',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (CMB demo PACS)',
        name: 'orthanc',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      },
    },
  ],
};
